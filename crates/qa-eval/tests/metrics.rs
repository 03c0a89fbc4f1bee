//! The official SQuAD rules on hand-made tricky cases; expected values are worked out by hand
//! from the rules (see each comment), not produced by this code.

use std::collections::HashMap;

use qa_eval::squad::{evaluate_v1, evaluate_v2, Gold, GoldQuestion};

fn gold(items: &[(&str, &[&str])]) -> Gold {
    Gold {
        questions: items
            .iter()
            .map(|(id, answers)| GoldQuestion {
                id: id.to_string(),
                answers: answers.iter().map(|a| a.to_string()).collect(),
            })
            .collect(),
        version: None,
    }
}

fn preds(items: &[(&str, &str)]) -> HashMap<String, String> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

#[test]
fn v1_tricky_cases() {
    let g = gold(&[
        ("p", &["!!!"]),                  // punctuation only: "" = "" → EM 1, F1 0 (v1)
        ("t", &["The"]),                  // article only vs "a": EM 1, F1 0
        ("u", &["“quoted” text"]),        // unicode quotes stay: F1 0.5
        ("m", &["New York City", "NYC"]), // max over golds: F1 0.8
        ("x", &["x"]),                    // missing prediction: 0
        ("7", &["7 days"]),               // "seven days": F1 0.5
    ]);
    let p = preds(&[
        ("p", ""),
        ("t", "a"),
        ("u", "quoted text"),
        ("m", "new york"),
        ("7", "seven days"),
    ]);
    let r = evaluate_v1(&g, &p);
    close(r.exact_match, 100.0 * 2.0 / 6.0);
    close(r.f1, 100.0 * 1.8 / 6.0);
    assert_eq!(r.missing, vec!["x".to_string()]);
}

fn v2_case() -> (Gold, HashMap<String, String>, Vec<(String, f64)>) {
    let g = gold(&[
        ("a1", &["Paris"]),
        ("a2", &["in the garden"]),
        ("n1", &[]),
        ("n2", &[]),
        ("a3", &["!!"]), // normalises to nothing: gold becomes [""] but it still "has an answer"
    ]);
    let p = preds(&[
        ("a1", "Paris"),
        ("a2", "garden"),
        ("n1", ""),
        ("n2", "something"),
        ("a3", ""),
    ]);
    let na = vec![
        ("a1".to_string(), 0.1),
        ("a2".to_string(), 0.3),
        ("n1".to_string(), 0.9),
        ("n2".to_string(), 0.2),
        ("a3".to_string(), 0.5),
    ];
    (g, p, na)
}

#[test]
fn v2_scores_subsets_and_best_threshold() {
    let (g, p, na) = v2_case();
    let r = evaluate_v2(&g, &p, Some(&na), 1.0);
    // raw exact 1,0,1,0,1; raw f1 1,2/3,1,0,1
    close(r.exact, 60.0);
    close(r.f1, 100.0 * (3.0 + 2.0 / 3.0) / 5.0);
    assert_eq!(r.total, 5);
    close(r.has_ans_exact.unwrap(), 200.0 / 3.0);
    close(r.has_ans_f1.unwrap(), 100.0 * (2.0 + 2.0 / 3.0) / 3.0);
    assert_eq!(r.has_ans_total, Some(3));
    close(r.no_ans_exact.unwrap(), 50.0);
    close(r.no_ans_f1.unwrap(), 50.0);
    assert_eq!(r.no_ans_total, Some(2));
    // Walk by na prob: a1(.1) +1 → 3 [best, .1]; n2(.2) −1 → 2; a2(.3) +0 → 2; a3(.5) +1 → 3;
    // n1(.9) 0. Start 2 (two no-answer questions).
    close(r.best_exact.unwrap(), 60.0);
    close(r.best_exact_thresh.unwrap(), 0.1);
    // F1 walk: 3 (.1), 2, 2+2/3, 3+2/3 [best, .5], same.
    close(r.best_f1.unwrap(), 100.0 * (3.0 + 2.0 / 3.0) / 5.0);
    close(r.best_f1_thresh.unwrap(), 0.5);
    let json = serde_json::to_string(&r).unwrap();
    let keys = [
        "exact",
        "f1",
        "total",
        "HasAns_exact",
        "HasAns_f1",
        "HasAns_total",
        "NoAns_exact",
        "NoAns_f1",
        "NoAns_total",
        "best_exact",
        "best_exact_thresh",
        "best_f1",
        "best_f1_thresh",
    ];
    let mut last = 0;
    for k in keys {
        let at = json
            .find(&format!("\"{k}\""))
            .unwrap_or_else(|| panic!("{k} missing"));
        assert!(at >= last, "{k} out of the official order");
        last = at;
    }
}

#[test]
fn v2_threshold_turns_confident_no_answers_into_empty() {
    let (g, p, na) = v2_case();
    // > 0.25: a2, a3, n1 are predicted unanswerable → scores 0, 0, 1.
    let r = evaluate_v2(&g, &p, Some(&na), 0.25);
    close(r.exact, 40.0);
    close(r.f1, 40.0);
    // Without a na-prob file there are no best_* keys.
    let r = evaluate_v2(&g, &p, None, 1.0);
    assert!(r.best_f1.is_none());
    assert!(!serde_json::to_string(&r).unwrap().contains("best_"));
}

#[test]
fn v2_missing_predictions_score_zero_and_are_listed() {
    let g = gold(&[("a", &["x"]), ("b", &[])]);
    let r = evaluate_v2(&g, &preds(&[("a", "x")]), None, 1.0);
    close(r.exact, 50.0);
    assert_eq!(r.missing, vec!["b".to_string()]);
}

#[test]
fn gold_is_read_from_squad_files_with_integer_ids() {
    let path = qa_testkit::shared_dir().join("data/covid-qa/dev.json");
    let g = Gold::from_squad_file(&path).unwrap();
    assert_eq!(g.questions.len(), 155);
    assert_eq!(g.questions[0].id, "2996");
    assert_eq!(g.guess_version(), qa_eval::SquadVersion::V1);
    // Scoring the gold answers themselves gives 100 / 100.
    let p: HashMap<String, String> = g
        .questions
        .iter()
        .map(|q| (q.id.clone(), q.answers[0].clone()))
        .collect();
    let r = evaluate_v1(&g, &p);
    close(r.exact_match, 100.0);
    close(r.f1, 100.0);
}
