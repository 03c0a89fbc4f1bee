//! DEFNLP end to end on the generated Coleridge fixture (`xtask/src/defnlp_fixture.rs`):
//! string matching finds exactly the known names planted, the merge rule's defaults are what
//! tuning on held-out training publications gives, the merge beats matching and QA alone on the
//! test publications, and broken publication files are kept with no labels.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use qa_eval::coleridge::{clean_label, score, ColeridgeScore};
use qa_eval::defnlp::{read_publications_lenient, write_submission};
use qa_eval::defnlp_match::{read_label_names, read_name_list, DatasetMatcher};
use qa_eval::defnlp_merge::{
    merge, near_duplicate, score_rule, tune, MergeRule, QaCandidate, TuningCase,
};
use qa_eval::score::score_defnlp_files;

#[allow(dead_code)] // shared with xtask and the CLI tests; each uses part of it
#[path = "../../../xtask/src/defnlp_fixture.rs"]
mod defnlp_fixture;

use defnlp_fixture::{
    split_publications, Fixture, FixturePublication, Hostile, Known, HELD_OUT_PERCENT, SEED,
    SPLIT_SEED,
};

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn written_fixture() -> (Fixture, tempfile::TempDir) {
    let fixture = Fixture::generate(SEED);
    let dir = tempfile::tempdir().unwrap();
    fixture.write(dir.path()).unwrap();
    (fixture, dir)
}

/// The matcher `qa predict --defnlp-labels train.csv --known-datasets big_gov_datasets.txt`
/// builds.
fn matcher_from_files(dir: &Path) -> DatasetMatcher {
    let mut names = read_label_names(&dir.join("train.csv")).unwrap();
    names.extend(read_name_list(&dir.join("big_gov_datasets.txt")).unwrap());
    DatasetMatcher::new(names).unwrap()
}

fn answers(publication: &FixturePublication) -> Vec<QaCandidate> {
    publication
        .reader
        .iter()
        .map(|a| QaCandidate::new(&a.text, a.probability))
        .collect()
}

/// One tuning/scoring case per publication: matches in its text as read from `folder`.
fn cases(pubs: &[&FixturePublication], folder: &Path, matcher: &DatasetMatcher) -> Vec<TuningCase> {
    let texts: BTreeMap<String, String> = read_publications_lenient(folder)
        .unwrap()
        .into_iter()
        .map(|p| (p.id, p.text))
        .collect();
    pubs.iter()
        .map(|p| TuningCase {
            id: p.id.clone(),
            matched: matcher.find(&texts[&p.id]),
            answers: answers(p),
            gold: p.gold().into_iter().collect(),
        })
        .collect()
}

/// Scores predictions per case against the cases' gold labels.
fn score_of(
    cases: &[TuningCase],
    predict: impl Fn(&TuningCase) -> BTreeSet<String>,
) -> ColeridgeScore {
    let gold: BTreeMap<String, Vec<String>> = cases
        .iter()
        .filter(|c| !c.gold.is_empty())
        .map(|c| (c.id.clone(), c.gold.clone()))
        .collect();
    let predicted: BTreeMap<String, Vec<String>> = cases
        .iter()
        .map(|c| (c.id.clone(), predict(c).into_iter().collect()))
        .collect();
    score(&gold, &predicted, 0.5)
}

fn counts(s: &ColeridgeScore) -> (usize, usize, usize) {
    (s.tp, s.fp, s.r#fn)
}

#[test]
fn fixture_cleans_as_the_scorer_and_is_what_the_docs_say() {
    // The fixture cleans with the scorer's own `clean_label` (one definition, in qa-data).
    let fixture = Fixture::generate(SEED);
    assert_eq!((fixture.train.len(), fixture.test.len()), (120, 46));
    // Every publication of the training split cites something; broken test files are there.
    assert!(fixture.train.iter().all(|p| !p.cited.is_empty()));
    let hostile: Vec<Hostile> = fixture
        .test
        .iter()
        .map(|p| p.hostile)
        .filter(|h| *h != Hostile::None)
        .collect();
    assert_eq!(hostile.len(), 6);
    // The test publications cite names train.csv lacks, listed and unlisted.
    let test_kinds: BTreeSet<Known> = fixture
        .test
        .iter()
        .flat_map(|p| p.cited.iter().map(|c| c.known))
        .collect();
    assert!(test_kinds.contains(&Known::ExternalList) && test_kinds.contains(&Known::Unseen));
    let train_csv: BTreeSet<String> = fixture
        .train
        .iter()
        .flat_map(|p| p.cited.iter().map(|c| c.dataset_title.clone()))
        .collect();
    for c in fixture.test.iter().flat_map(|p| &p.cited) {
        let in_train = train_csv.contains(&c.dataset_title);
        assert_eq!(
            in_train,
            matches!(c.known, Known::Common | Known::Rare),
            "{c:?}"
        );
    }
    // Deterministic: the same seed gives the same bytes.
    let again = Fixture::generate(SEED);
    assert_eq!(
        fixture
            .test
            .iter()
            .map(|p| p.file_bytes())
            .collect::<Vec<_>>(),
        again
            .test
            .iter()
            .map(|p| p.file_bytes())
            .collect::<Vec<_>>()
    );
}

#[test]
fn matching_is_whole_words_case_insensitive_and_longest_first() {
    let matcher = DatasetMatcher::new([
        "ARMS",
        "Agricultural Resource Management Survey",
        "Baccalaureate and Beyond",
        "Baccalaureate and Beyond Longitudinal Study",
        "NELS:88",
        "adni",
        "National Health and Nutrition Examination Survey",
        "",
        "  ",
    ])
    .unwrap();
    assert_eq!(matcher.len(), 7);
    let find = |text: &str| matcher.find(text);
    assert_eq!(
        find("Family farms and firearms; disarmed ARMSx arms-length"),
        set(&["arms"])
    );
    assert_eq!(find("Family farms and firearms."), set(&[]));
    assert_eq!(find("data from the ARMS."), set(&["arms"]));
    assert_eq!(
        find("the agricultural resource management survey (ARMS)"),
        set(&["agricultural resource management survey", "arms"])
    );
    // The longer name wins where both start; the shorter is found elsewhere.
    assert_eq!(
        find("The Baccalaureate and Beyond Longitudinal Study, unlike Baccalaureate and Beyond:"),
        set(&[
            "baccalaureate and beyond longitudinal study",
            "baccalaureate and beyond"
        ])
    );
    // A longer name that fails its last word does not hide the shorter one.
    assert_eq!(
        find("Baccalaureate and Beyond Longitudinal Studies"),
        set(&["baccalaureate and beyond"])
    );
    // Punctuation and case inside names, names side by side, non-ASCII around them.
    assert_eq!(find("NELS:88"), set(&["nels 88"]));
    assert_eq!(find("nels-88 ADNI"), set(&["nels 88", "adni"]));
    assert_eq!(
        find("São Paulo — NATIONAL HEALTH AND NUTRITION EXAMINATION SURVEY ≥ 2"),
        set(&["national health and nutrition examination survey"])
    );
    assert_eq!(find(""), set(&[]));
    assert!(DatasetMatcher::new(Vec::<String>::new())
        .unwrap()
        .is_empty());
}

#[test]
fn matching_finds_exactly_the_known_names_planted_in_every_test_publication() {
    let (fixture, dir) = written_fixture();
    let matcher = matcher_from_files(dir.path());
    let publications = read_publications_lenient(&dir.path().join("test")).unwrap();
    assert_eq!(publications.len(), fixture.test.len());
    let found = matcher.find_all(&publications, qa_data::Progress::Hidden);
    let train_ids = fixture.train_ids();
    let mut planted = 0;
    for (publication, found) in publications.iter().zip(&found) {
        let spec = fixture
            .test
            .iter()
            .find(|p| p.id == publication.id)
            .expect("every file is a fixture publication");
        let expected = fixture.expected_matches(spec, &train_ids);
        planted += expected.len();
        assert_eq!(found, &expected, "publication {}", publication.id);
    }
    // Enough to mean something: every readable test publication cites a known name.
    assert_eq!(planted, 79);
    // Names absent from train.csv and the list are never found by matching.
    let unseen: BTreeSet<String> = fixture
        .test
        .iter()
        .flat_map(|p| p.cited.iter())
        .filter(|c| c.known == Known::Unseen)
        .map(|c| clean_label(&c.label))
        .collect();
    assert!(!unseen.is_empty());
    assert!(found.iter().all(|f| f.is_disjoint(&unseen)));
}

#[test]
fn broken_publications_are_kept_with_no_text() {
    let (fixture, dir) = written_fixture();
    let publications = read_publications_lenient(&dir.path().join("test")).unwrap();
    let by_id: BTreeMap<&str, &str> = publications
        .iter()
        .map(|p| (p.id.as_str(), p.text.as_str()))
        .collect();
    for spec in &fixture.test {
        let text = by_id[spec.id.as_str()];
        match spec.hostile {
            Hostile::None => assert!(!text.is_empty(), "{}", spec.id),
            _ => assert_eq!(text, "", "{:?}", spec.hostile),
        }
    }
    // A folder without publications is an error that names it.
    let empty = tempfile::tempdir().unwrap();
    let err = read_publications_lenient(empty.path()).unwrap_err();
    assert!(err
        .to_string()
        .contains(&empty.path().display().to_string()));
}

#[test]
fn merge_keeps_matched_names_and_adds_only_new_probable_short_answers() {
    let matched = set(&["adni", "census of agriculture"]);
    let answers = vec![
        // Duplicates of matched names: equal, containing one, Jaccard ≥ 0.5.
        QaCandidate::new("ADNI", 0.99),
        QaCandidate::new("the ADNI data", 0.9),
        QaCandidate::new("2012 Census of Agriculture", 0.9),
        // New and probable: kept; its near-duplicate of lower probability is not.
        QaCandidate::new("Panel Study of Income Dynamics", 0.8),
        QaCandidate::new("Panel Study of Income", 0.7),
        // Improbable, or too long.
        QaCandidate::new("Health and Retirement Study", 0.3),
        QaCandidate::new(
            "data were collected from participants in three waves between 2004 and 2010",
            0.95,
        ),
        QaCandidate::new("?!", 0.99),
    ];
    let rule = MergeRule {
        min_probability: 0.5,
        max_words: 8,
    };
    assert_eq!(
        merge(&matched, &answers, &rule),
        set(&[
            "adni",
            "census of agriculture",
            "panel study of income dynamics"
        ])
    );
    // Matched names are never dropped, even when they are near-duplicates of each other.
    let both = set(&[
        "baccalaureate and beyond",
        "baccalaureate and beyond longitudinal study",
    ]);
    assert_eq!(merge(&both, &[], &rule), both);
    assert!(near_duplicate("the adni data", "adni"));
    assert!(near_duplicate(
        "panel study of income",
        "panel study of income dynamics"
    ));
    assert!(!near_duplicate("arms", "farms survey"));
    assert!(!near_duplicate(
        "american community survey",
        "current population survey"
    ));
}

#[test]
fn tuning_on_held_out_training_publications_gives_the_default_rule() {
    let (fixture, dir) = written_fixture();
    let (kept, held_out) = split_publications(&fixture.train_ids(), SPLIT_SEED, HELD_OUT_PERCENT);
    assert_eq!((kept.len(), held_out.len()), (108, 12));
    // Names known from the kept nine tenths of train.csv, and the external list.
    let matcher = DatasetMatcher::new(fixture.known_names(&kept)).unwrap();
    let pubs: Vec<&FixturePublication> = fixture
        .train
        .iter()
        .filter(|p| held_out.contains(&p.id))
        .collect();
    let cases = cases(&pubs, &dir.path().join("train"), &matcher);
    let (rule, best) = tune(&cases);
    assert_eq!(rule, MergeRule::TUNED, "best {best:?}");
    assert_eq!(rule, MergeRule::default());
}

#[test]
fn merge_beats_matching_and_qa_alone_on_the_test_publications() {
    let (fixture, dir) = written_fixture();
    let matcher = matcher_from_files(dir.path());
    let pubs: Vec<&FixturePublication> = fixture.test.iter().collect();
    let cases = cases(&pubs, &dir.path().join("test"), &matcher);
    let matched = score_of(&cases, |c| c.matched.clone());
    // `--defnlp-mode qa` keeps every answer (--min-score 0).
    let qa = score_of(&cases, |c| {
        c.answers.iter().map(|a| a.label.clone()).collect()
    });
    let both = score_rule(&cases, &MergeRule::default());
    println!("match {matched:?}\nqa {qa:?}\nboth {both:?}");
    assert!(
        both.fbeta > matched.fbeta,
        "{} vs {}",
        both.fbeta,
        matched.fbeta
    );
    assert!(both.fbeta > qa.fbeta, "{} vs {}", both.fbeta, qa.fbeta);
    assert!(both.recall > matched.recall && both.precision > qa.precision);
    // Pinned: F0.5 0.961 (match), 0.465 (qa), 0.963 (both).
    assert_eq!(counts(&matched), (79, 0, 16));
    assert_eq!(counts(&qa), (74, 101, 21));
    assert_eq!(counts(&both), (83, 1, 12));

    // The same numbers through the files: submission written, then scored as `qa score --defnlp`.
    let rows: Vec<(String, BTreeSet<String>)> = cases
        .iter()
        .map(|c| {
            (
                c.id.clone(),
                merge(&c.matched, &c.answers, &MergeRule::default()),
            )
        })
        .collect();
    let submission = dir.path().join("both.csv");
    write_submission(&submission, rows.iter().map(|(id, l)| (id.as_str(), l))).unwrap();
    let from_files = score_defnlp_files(&dir.path().join("test_gold.csv"), &submission).unwrap();
    assert_eq!(from_files["tp"], both.tp);
    assert_eq!(from_files["fp"], both.fp);
    assert_eq!(from_files["fn"], both.r#fn);
}
