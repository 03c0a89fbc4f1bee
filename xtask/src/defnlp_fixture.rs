//! A generated Coleridge "Show US the Data" folder for DEFNLP (`cargo xtask fetch
//! defnlp-fixture --to DIR`), and the seeded by-publication split `cargo xtask reproduce
//! --preset defnlp` holds publications out with.
//!
//! The same file is compiled into the DEFNLP tests (`#[path]` modules in
//! `crates/qa-eval/tests/defnlp.rs` and `crates/qa-cli/tests/defnlp.rs`), so it uses only `std`
//! and `serde_json`, and its randomness is its own SplitMix64: the fixture is byte-identical on
//! every machine.
//!
//! What [`Fixture::write`] lays out:
//! * `train.csv` (`Id,pub_title,dataset_title,dataset_label,cleaned_label`, one row per dataset
//!   mention variant a publication uses) and `train/{Id}.json` (lists of `{section_title,
//!   text}`): publications citing [`Known::Common`] and [`Known::Rare`] datasets.
//! * `test/{Id}.json` and `test_gold.csv` (the same columns): publications that also cite
//!   datasets absent from `train.csv` — some named in `big_gov_datasets.txt`
//!   ([`Known::ExternalList`]), some nowhere ([`Known::Unseen`]) — plus hostile files: an empty
//!   list, blank sections, a section without `text`, invalid UTF-8, zero bytes, cut-off JSON.
//! * `big_gov_datasets.txt`: the external list of names, one per line (some never cited).
//! * `qa_candidates.jsonl`: what a *simulated* reader answers per publication
//!   (`{"Id", "candidates": [{"text", "probability"}]}`): it finds 80% of the cited datasets
//!   (sometimes with a word too many or too few) and adds distractor spans, short and long, at
//!   lower probabilities. The merge tests use it as hand-made QA output; a real model's answers
//!   come from `qa predict --defnlp-mode qa`.
//!
//! Mentions sit in varied sentences (sentence start, parentheses, after "the", before a comma,
//! upper case) in varied sections; sections are missing at random; fillers hold traps for
//! whole-word matching ("farms", "firearms", "census tracts") and non-ASCII text.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

/// The fixture's seed (the issue number).
pub const SEED: u64 = 17;
/// The seed of the held-out split ([`split_publications`]) in `reproduce` and the tests.
pub const SPLIT_SEED: u64 = 42;
/// Share of the training publications held out, in percent.
pub const HELD_OUT_PERCENT: usize = 10;

/// Where a cited dataset's name can be known from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Known {
    /// Cited by many training publications (in `train.csv`).
    Common,
    /// Cited by one training publication (in `train.csv`).
    Rare,
    /// Not in `train.csv`, named in `big_gov_datasets.txt`.
    ExternalList,
    /// Named nowhere: only a reader can find it.
    Unseen,
}

/// A dataset: its title and the ways publications write it (the first is the title).
#[derive(Debug, Clone)]
pub struct Dataset {
    pub title: String,
    pub variants: Vec<String>,
    pub known: Known,
}

/// How a publication's file is broken, if it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// A well-formed publication.
    None,
    /// `[]`: no sections at all.
    EmptyList,
    /// Sections whose texts are all blank.
    BlankSections,
    /// One section lacks its `text` field (the strict reader refuses the file).
    SectionWithoutText,
    /// A byte that is not UTF-8 inside a text.
    NotUtf8,
    /// A zero-byte file.
    ZeroBytes,
    /// JSON cut off in the middle.
    TruncatedJson,
}

impl Hostile {
    /// Whether the strict reader (`qa_data::defnlp::read_publication`) refuses the file.
    pub fn unreadable(self) -> bool {
        matches!(
            self,
            Hostile::SectionWithoutText
                | Hostile::NotUtf8
                | Hostile::ZeroBytes
                | Hostile::TruncatedJson
        )
    }
}

/// One gold row: a dataset a publication cites, under the name it writes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cited {
    pub dataset_title: String,
    pub label: String,
    pub known: Known,
}

/// What the simulated reader answered for a publication.
#[derive(Debug, Clone, PartialEq)]
pub struct ReaderAnswer {
    pub text: String,
    pub probability: f32,
}

#[derive(Debug, Clone)]
pub struct FixturePublication {
    pub id: String,
    pub title: String,
    /// `(section_title, text)` in order.
    pub sections: Vec<(String, String)>,
    pub hostile: Hostile,
    pub cited: Vec<Cited>,
    pub reader: Vec<ReaderAnswer>,
}

impl FixturePublication {
    /// The gold labels, cleaned (the scorer's `cleaned_label`).
    pub fn gold(&self) -> BTreeSet<String> {
        self.cited.iter().map(|c| clean(&c.label)).collect()
    }

    /// The file's bytes.
    pub fn file_bytes(&self) -> Vec<u8> {
        let sections = |with_text: bool| -> Vec<serde_json::Value> {
            self.sections
                .iter()
                .map(|(title, text)| {
                    if with_text {
                        serde_json::json!({"section_title": title, "text": text})
                    } else {
                        serde_json::json!({"section_title": title})
                    }
                })
                .collect()
        };
        let json = |value: Vec<serde_json::Value>| {
            serde_json::to_vec_pretty(&value).expect("JSON values serialize")
        };
        match self.hostile {
            Hostile::None | Hostile::BlankSections => json(sections(true)),
            Hostile::EmptyList => b"[]".to_vec(),
            Hostile::ZeroBytes => Vec::new(),
            Hostile::SectionWithoutText => {
                let mut all = sections(true);
                all.push(serde_json::json!({"section_title": "Appendix"}));
                json(all)
            }
            Hostile::NotUtf8 => {
                // Latin-1 "é" (0xE9) where UTF-8 needs two bytes: the file is not UTF-8.
                let text = String::from_utf8(json(sections(true))).expect("JSON is UTF-8");
                text.replacen("caf\u{e9}", "caf\u{1}", 1)
                    .into_bytes()
                    .into_iter()
                    .map(|b| if b == 1 { 0xE9 } else { b })
                    .collect()
            }
            Hostile::TruncatedJson => {
                let bytes = json(sections(true));
                bytes[..bytes.len() / 2].to_vec()
            }
        }
    }
}

/// The whole fixture, in memory.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub datasets: Vec<Dataset>,
    pub train: Vec<FixturePublication>,
    pub test: Vec<FixturePublication>,
    /// `big_gov_datasets.txt`, one name a line.
    pub external_list: Vec<String>,
}

/// The competition's `clean_text`, the one the scorer uses.
pub use qa_data::defnlp::clean_label as clean;

/// SplitMix64: small, seeded, the same everywhere.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    fn range(&mut self, lo: usize, hi_inclusive: usize) -> usize {
        lo + self.below(hi_inclusive - lo + 1)
    }
    fn percent(&mut self, p: u64) -> bool {
        self.next_u64() % 100 < p
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    /// A probability in [lo, hi], rounded to 3 decimals.
    fn probability(&mut self, lo: f64, hi: f64) -> f32 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((lo + (hi - lo) * unit) * 1000.0).round() as f32 / 1000.0
    }
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
    /// A Kaggle-style publication id (a version-4 UUID).
    fn uuid(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }
}

const COMMON: &[&[&str]] = &[
    &["Alzheimer's Disease Neuroimaging Initiative (ADNI)", "ADNI"],
    &[
        "Baccalaureate and Beyond Longitudinal Study",
        "Baccalaureate and Beyond",
    ],
    &["Early Childhood Longitudinal Study", "ECLS-K"],
    &[
        "Trends in International Mathematics and Science Study",
        "TIMSS",
    ],
    &["Agricultural Resource Management Survey", "ARMS"],
    &["Census of Agriculture"],
    &["NOAA Tide Gauge", "NOAA tide station"],
    &["Survey of Earned Doctorates"],
    &["COVID-19 Open Research Dataset", "CORD-19"],
    &["World Ocean Database"],
    &["National Education Longitudinal Study", "NELS:88"],
    &["Rural-Urban Continuum Codes"],
];

const EXTERNAL: &[&str] = &[
    "National Health and Nutrition Examination Survey",
    "American Community Survey",
    "Current Population Survey",
    "Medical Expenditure Panel Survey",
];

/// In `big_gov_datasets.txt` but cited by no publication.
const LIST_ONLY: &[&str] = &[
    "Consumer Expenditure Survey",
    "National Crime Victimization Survey",
    "Behavioral Risk Factor Surveillance System",
    "National Survey on Drug Use and Health",
    "Survey of Income and Program Participation",
];

const UNSEEN: &[&str] = &[
    "Panel Study of Income Dynamics",
    "National Longitudinal Survey of Youth",
    "Health and Retirement Study",
    "Global Historical Climatology Network",
    "Framingham Heart Study",
    "Sea, Lake, and Overland Surges from Hurricanes",
];

/// Parts of the long tail of rarely cited datasets ("Great Lakes Groundwater Quality Survey").
const REGIONS: &[&str] = &[
    "Great Lakes",
    "Gulf Coast",
    "Appalachian",
    "Chesapeake Bay",
    "Pacific Northwest",
    "New England",
    "Upper Midwest",
    "Mojave Desert",
    "Ozark Plateau",
    "Rio Grande Valley",
    "Puget Sound",
    "Central Valley",
];
const TOPICS: &[&str] = &[
    "Groundwater Quality",
    "Household Travel",
    "Soil Moisture",
    "Coastal Fisheries",
    "Wildfire Smoke",
    "Teacher Workforce",
    "Broadband Adoption",
    "Rural Clinic Access",
    "Forest Inventory",
    "Wetland Mapping",
    "Student Aid Uptake",
    "Bridge Condition",
];
const KINDS: &[&str] = &[
    "Survey",
    "Monitoring Program",
    "Database",
    "Panel Study",
    "Inventory",
];

/// Sentences that cite `{}`.
const MENTIONS: &[&str] = &[
    "We used data from the {} to estimate the effect of the programme.",
    "Data were obtained from the {} (2012 release).",
    "The {} provides a nationally representative sample of respondents.",
    "{} data were linked to county-level indicators for every year.",
    "This analysis relies on the {}, which is publicly available.",
    "We compare our estimates with those reported in the {}.",
    "Following prior work with the {}, we restrict the sample to complete cases.",
    "Summary statistics from the {} are reported in Table 2.",
    "Our outcome measures come from {} files released by the agency.",
    "Records were matched to the {} using a probabilistic linkage.",
    "A subset of variables (drawn from the {}) was harmonised across waves.",
    "THE {} WAS THE PRIMARY SOURCE FOR THE MAPS IN FIGURE 1.",
];

/// Sentences with no dataset: traps for whole-word matching, and non-ASCII text.
const FILLERS: &[&str] = &[
    "Family farms in the region shrank over the decade.",
    "Rates of firearms ownership varied widely between counties.",
    "We aggregate census tracts to commuting zones before estimation.",
    "The naïve estimator is biased when treatment is endogenous.",
    "Field work in São Paulo and Zürich followed the same protocol.",
    "Standard errors are clustered at the state level.",
    "Results are robust to alternative specifications — see the appendix.",
    "Participants completed the questionnaire at baseline and at follow-up.",
    "The longitudinal study design allows within-person comparisons.",
    "Effects were largest for students from low-income households.",
    "We thank the café staff who hosted the focus groups.",
    "Missing values were imputed with chained equations (m = 20).",
    "Regression coefficients are shown with 95% confidence intervals.",
    "Sea surface temperatures rose faster in the northern basin.",
    "Tide records were detrended before the spectral analysis.",
    "Doctoral graduates reported higher earnings ten years later.",
    "The survey instrument was piloted with twelve volunteers.",
    "Imaging biomarkers predicted cognitive decline ≥ 2 years ahead.",
];

const SECTIONS: &[(&str, u64)] = &[
    ("Abstract", 90),
    ("Introduction", 95),
    ("Data", 70),
    ("Methods", 80),
    ("Results", 90),
    ("Discussion", 80),
    ("Conclusion", 60),
    ("Acknowledgments", 30),
];

const TITLE_TOPICS: &[&str] = &[
    "school choice",
    "early reading outcomes",
    "coastal flooding",
    "farm household income",
    "graduate earnings",
    "cognitive decline",
    "pandemic literature",
    "ocean warming",
    "rural health",
    "teacher retention",
];
const TITLE_FORMS: &[&str] = &[
    "Effects of {} in the United States",
    "New evidence on {}",
    "A longitudinal analysis of {}",
    "Measuring {} with administrative data",
    "What drives {}?",
];

/// Short spans a reader wrongly answers.
const SHORT_DISTRACTORS: &[&str] = &[
    "the survey",
    "our sample",
    "regression models",
    "the study",
    "county-level indicators",
    "baseline data",
    "Table 2",
    "administrative data",
    "principal component analysis",
    "the agency",
];

impl Fixture {
    /// The fixture of `seed` ([`SEED`] is the one the tests and docs use).
    pub fn generate(seed: u64) -> Fixture {
        let mut rng = Rng(seed);
        let mut datasets: Vec<Dataset> = COMMON
            .iter()
            .map(|variants| Dataset {
                title: variants[0].to_string(),
                variants: variants.iter().map(|v| v.to_string()).collect(),
                known: Known::Common,
            })
            .collect();
        // The long tail: distinct (region, topic) pairs, so no two tail names are
        // near-duplicates (they share at most a region or a topic and the kind).
        let mut pairs: Vec<(usize, usize)> = (0..REGIONS.len())
            .flat_map(|r| (0..TOPICS.len()).map(move |t| (r, t)))
            .collect();
        rng.shuffle(&mut pairs);
        let mut tail: Vec<String> = pairs[..44]
            .iter()
            .map(|&(r, t)| format!("{} {} {}", REGIONS[r], TOPICS[t], rng.pick(KINDS)))
            .collect();
        let unseen_tail = tail.split_off(40);
        datasets.extend(tail.into_iter().map(|name| Dataset {
            title: name.clone(),
            variants: vec![name],
            known: Known::Rare,
        }));
        for (names, known) in [
            (
                EXTERNAL.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                Known::ExternalList,
            ),
            (
                UNSEEN
                    .iter()
                    .map(|s| s.to_string())
                    .chain(unseen_tail)
                    .collect(),
                Known::Unseen,
            ),
        ] {
            datasets.extend(names.into_iter().map(|name| Dataset {
                title: name.clone(),
                variants: vec![name],
                known,
            }));
        }

        let of = |known: Known| -> Vec<usize> {
            (0..datasets.len())
                .filter(|&i| datasets[i].known == known)
                .collect()
        };
        let (common, rare, external, unseen) = (
            of(Known::Common),
            of(Known::Rare),
            of(Known::ExternalList),
            of(Known::Unseen),
        );

        // Training: 120 publications; each of the 40 rare datasets is cited by exactly one.
        let mut train = Vec::new();
        for i in 0..120 {
            let mut cites = vec![*rng.pick(&common)];
            if rng.percent(35) {
                let other = *rng.pick(&common);
                if !cites.contains(&other) {
                    cites.push(other);
                }
            }
            if let Some(&r) = rare.get(i) {
                cites.push(r);
            }
            train.push(publication(&mut rng, &datasets, &cites, Hostile::None));
        }
        let mut test = Vec::new();
        for i in 0..40 {
            let mut cites = vec![*rng.pick(&common)];
            if rng.percent(30) {
                cites.push(*rng.pick(&rare));
            }
            match i % 3 {
                0 => cites.push(external[i / 3 % external.len()]),
                1 => cites.push(unseen[i / 3 % unseen.len()]),
                _ => {}
            }
            if rng.percent(25) {
                let other = *rng.pick(&common);
                if !cites.contains(&other) {
                    cites.push(other);
                }
            }
            test.push(publication(&mut rng, &datasets, &cites, Hostile::None));
        }
        for hostile in [
            Hostile::EmptyList,
            Hostile::BlankSections,
            Hostile::SectionWithoutText,
            Hostile::NotUtf8,
            Hostile::ZeroBytes,
            Hostile::TruncatedJson,
        ] {
            let cites = vec![*rng.pick(&common)];
            test.push(publication(&mut rng, &datasets, &cites, hostile));
        }
        test.sort_by(|a, b| a.id.cmp(&b.id));

        let mut external_list: Vec<String> = EXTERNAL
            .iter()
            .chain(LIST_ONLY)
            .map(|s| s.to_string())
            .collect();
        // The list overlaps the training labels, as real lists do.
        external_list.push("Census of Agriculture".into());
        external_list.push("World Ocean Database".into());
        external_list.sort();
        Fixture {
            datasets,
            train,
            test,
            external_list,
        }
    }

    /// Every cleaned name a matcher built from `train.csv` rows of `train_ids` (all columns)
    /// and `big_gov_datasets.txt` knows.
    pub fn known_names(&self, train_ids: &BTreeSet<String>) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.external_list.iter().map(|n| clean(n)).collect();
        for p in self.train.iter().filter(|p| train_ids.contains(&p.id)) {
            for c in &p.cited {
                names.insert(clean(&c.dataset_title));
                names.insert(clean(&c.label));
            }
        }
        names
    }

    /// The labels string matching must find in `publication`: its cited names that
    /// [`Fixture::known_names`] holds (none when the file is unreadable).
    pub fn expected_matches(
        &self,
        publication: &FixturePublication,
        train_ids: &BTreeSet<String>,
    ) -> BTreeSet<String> {
        if publication.hostile != Hostile::None {
            return BTreeSet::new();
        }
        let known = self.known_names(train_ids);
        publication
            .gold()
            .into_iter()
            .filter(|label| known.contains(label))
            .collect()
    }

    /// Ids of all training publications.
    pub fn train_ids(&self) -> BTreeSet<String> {
        self.train.iter().map(|p| p.id.clone()).collect()
    }

    /// Writes the folder described in the module docs into `dir` (created if needed).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        for (split, pubs) in [("train", &self.train), ("test", &self.test)] {
            let folder = dir.join(split);
            std::fs::create_dir_all(&folder)?;
            for p in pubs.iter() {
                std::fs::write(folder.join(format!("{}.json", p.id)), p.file_bytes())?;
            }
        }
        write_gold(&dir.join("train.csv"), &self.train)?;
        write_gold(&dir.join("test_gold.csv"), &self.test)?;
        std::fs::write(
            dir.join("big_gov_datasets.txt"),
            self.external_list.join("\n") + "\n",
        )?;
        let mut reader =
            std::io::BufWriter::new(std::fs::File::create(dir.join("qa_candidates.jsonl"))?);
        for p in self.train.iter().chain(&self.test) {
            let candidates: Vec<serde_json::Value> = p
                .reader
                .iter()
                .map(|a| {
                    // Three decimals, as drawn (not the f32's f64 expansion).
                    let probability = (f64::from(a.probability) * 1000.0).round() / 1000.0;
                    serde_json::json!({"text": a.text, "probability": probability})
                })
                .collect();
            let line = serde_json::json!({"Id": p.id, "candidates": candidates});
            writeln!(reader, "{line}")?;
        }
        reader.flush()?;
        std::fs::write(dir.join("README.md"), README)?;
        Ok(())
    }
}

const README: &str = "# DEFNLP fixture (generated)\n\n\
Made by `cargo xtask fetch defnlp-fixture` (`xtask/src/defnlp_fixture.rs`); regenerate rather \
than edit.\n\n\
* `train.csv`, `train/`: training publications (Coleridge layout).\n\
* `test/`, `test_gold.csv`: test publications and their gold labels; they cite datasets absent \
from `train.csv` and include broken files.\n\
* `big_gov_datasets.txt`: an external list of dataset names.\n\
* `qa_candidates.jsonl`: answers of a simulated reader (not a model), for merge tests.\n";

/// One Coleridge CSV row per (publication, cited name).
fn write_gold(path: &Path, pubs: &[FixturePublication]) -> std::io::Result<()> {
    let mut out = String::from("Id,pub_title,dataset_title,dataset_label,cleaned_label\n");
    for p in pubs {
        for c in &p.cited {
            let row = [
                p.id.as_str(),
                &p.title,
                &c.dataset_title,
                &c.label,
                &clean(&c.label),
            ];
            let fields: Vec<String> = row.iter().map(|f| csv_field(f)).collect();
            out.push_str(&fields.join(","));
            out.push('\n');
        }
    }
    std::fs::write(path, out)
}

fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// One publication citing `cites` (indices into `datasets`), each under one or two of its
/// variants, one to three times, in random sections.
fn publication(
    rng: &mut Rng,
    datasets: &[Dataset],
    cites: &[usize],
    hostile: Hostile,
) -> FixturePublication {
    let id = rng.uuid();
    let topic = rng.pick::<&str>(TITLE_TOPICS);
    let title = rng.pick(TITLE_FORMS).replace("{}", topic);
    let mut sections: Vec<(String, Vec<String>)> = SECTIONS
        .iter()
        .filter(|(_, p)| rng.percent(*p))
        .map(|(name, _)| (name.to_string(), Vec::new()))
        .collect();
    if sections.is_empty() {
        sections.push(("Introduction".into(), Vec::new()));
    }
    for (_, sentences) in sections.iter_mut() {
        for _ in 0..rng.range(2, 5) {
            sentences.push(rng.pick(FILLERS).to_string());
        }
    }
    let mut cited = Vec::new();
    let mut reader = Vec::new();
    for &d in cites {
        let dataset = &datasets[d];
        let mut variants = vec![rng.pick(&dataset.variants).clone()];
        if dataset.variants.len() > 1 && rng.percent(30) {
            let other = rng.pick(&dataset.variants).clone();
            if !variants.contains(&other) {
                variants.push(other);
            }
        }
        for variant in variants {
            for _ in 0..rng.range(1, 3) {
                let form = rng.pick(MENTIONS);
                let written = if form.starts_with("THE ") {
                    variant.to_uppercase()
                } else {
                    variant.clone()
                };
                let sentence = form.replacen("{}", &written, 1);
                let s = rng.below(sections.len());
                let at = rng.below(sections[s].1.len() + 1);
                sections[s].1.insert(at, sentence);
            }
            if rng.percent(80) {
                reader.push(reader_answer(rng, &variant));
            }
            cited.push(Cited {
                dataset_title: dataset.title.clone(),
                label: variant,
                known: dataset.known,
            });
        }
    }
    for _ in 0..rng.range(1, 4) {
        reader.push(if rng.percent(60) {
            ReaderAnswer {
                text: rng.pick(SHORT_DISTRACTORS).to_string(),
                probability: rng.probability(0.05, 0.65),
            }
        } else {
            // A long span: the start of a filler sentence, 9 to 16 words, across two sentences.
            let words: Vec<String> = format!("{} {}", rng.pick(FILLERS), rng.pick(FILLERS))
                .split_whitespace()
                .map(str::to_string)
                .collect();
            let n = rng.range(9, 16).min(words.len());
            ReaderAnswer {
                text: words[..n].join(" "),
                probability: rng.probability(0.15, 0.75),
            }
        });
    }
    cited.sort();
    cited.dedup();
    let mut sections: Vec<(String, String)> = sections
        .into_iter()
        .map(|(name, sentences)| (name, sentences.join(" ")))
        .collect();
    match hostile {
        Hostile::BlankSections => {
            for (_, text) in sections.iter_mut() {
                *text = "  ".into();
            }
        }
        Hostile::NotUtf8 => {
            // The café sentence carries the byte that is not UTF-8.
            sections[0]
                .1
                .push_str(" We thank the café staff who hosted the focus groups.");
        }
        _ => {}
    }
    if matches!(
        hostile,
        Hostile::EmptyList | Hostile::BlankSections | Hostile::ZeroBytes
    ) {
        // Nothing to cite, nothing to read.
        cited.clear();
        reader.clear();
    }
    if hostile.unreadable() {
        // The datasets are cited (gold keeps them), but no reader sees the text.
        reader.clear();
    }
    FixturePublication {
        id,
        title,
        sections,
        hostile,
        cited,
        reader,
    }
}

/// The simulated reader on a cited name: mostly the name as written, sometimes a word too many
/// or too few.
fn reader_answer(rng: &mut Rng, variant: &str) -> ReaderAnswer {
    let roll = rng.below(100);
    if roll < 65 {
        ReaderAnswer {
            text: variant.to_string(),
            probability: rng.probability(0.45, 0.97),
        }
    } else if roll < 85 {
        let form = rng.pick(&["the {} data", "data from the {}", "{} dataset"]);
        ReaderAnswer {
            text: form.replace("{}", variant),
            probability: rng.probability(0.3, 0.85),
        }
    } else {
        let words: Vec<&str> = variant.split_whitespace().collect();
        let text = if words.len() >= 3 {
            words[..words.len() - 1].join(" ")
        } else {
            format!("the {variant}")
        };
        ReaderAnswer {
            text,
            probability: rng.probability(0.25, 0.7),
        }
    }
}

/// Splits publication ids by publication, seeded: `(kept, held_out)`, the held-out share
/// `held_out_percent` of them (rounded, at least one when there are two or more).
pub fn split_publications(
    ids: &BTreeSet<String>,
    seed: u64,
    held_out_percent: usize,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut order: Vec<&String> = ids.iter().collect();
    Rng(seed).shuffle(&mut order);
    let mut n = (ids.len() * held_out_percent + 50) / 100;
    if ids.len() >= 2 {
        n = n.clamp(1, ids.len() - 1);
    }
    let held_out: BTreeSet<String> = order[..n].iter().map(|s| s.to_string()).collect();
    let kept = ids.difference(&held_out).cloned().collect();
    (kept, held_out)
}
