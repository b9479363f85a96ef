//! Property tests for the parsers that read what clients send: quantities, selectors, documents
//! and the four patch types. They run with `cargo test`: arbitrary input never panics, never
//! makes something deeper or larger than the limits allow, and parses to what a reference
//! computation says.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::document::{self, MAX_DEPTH};
use super::fields::FieldSelector;
use super::labels::Selector;
use super::patch;
use super::quantity::{Quantity, QuantityError};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings that look like quantities, and some that almost do.
fn quantity_like() -> impl Strategy<Value = String> {
    let suffix = prop_oneof![
        Just(String::new()),
        prop::sample::select(vec![
            "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E"
        ])
        .prop_map(str::to_string),
        (any::<bool>(), -40i32..40)
            .prop_map(|(big, e)| format!("{}{e}", if big { "E" } else { "e" })),
        "[a-zA-Z+-]{1,3}",
    ];
    (
        "[+-]?",
        "[0-9]{0,45}",
        proptest::option::of("[0-9]{0,45}"),
        suffix,
    )
        .prop_map(|(sign, whole, frac, suffix)| match frac {
            Some(f) => format!("{sign}{whole}.{f}{suffix}"),
            None => format!("{sign}{whole}{suffix}"),
        })
}

/// A JSON value of bounded size and depth.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z]{0,4}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z$/]{1,4}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON pointers into small documents, some valid, some not.
fn pointer() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof!["[a-z]{1,2}", "[0-9]", Just("-".to_string())],
        0..4,
    )
    .prop_map(|segs| segs.iter().map(|s| format!("/{s}")).collect())
}

fn json_patch_op() -> impl Strategy<Value = Value> {
    prop_oneof![
        (pointer(), json_value()).prop_map(|(p, v)| json!({"op": "add", "path": p, "value": v})),
        pointer().prop_map(|p| json!({"op": "remove", "path": p})),
        (pointer(), json_value())
            .prop_map(|(p, v)| json!({"op": "replace", "path": p, "value": v})),
        (pointer(), pointer()).prop_map(|(f, p)| json!({"op": "copy", "from": f, "path": p})),
        (pointer(), pointer()).prop_map(|(f, p)| json!({"op": "move", "from": f, "path": p})),
        (pointer(), json_value()).prop_map(|(p, v)| json!({"op": "test", "path": p, "value": v})),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn quantities_never_panic_and_print_back_to_themselves(s in quantity_like()) {
        if let Ok(q) = Quantity::parse(&s) {
            let again = Quantity::parse(&q.canonical()).expect("the canonical form parses");
            prop_assert_eq!(again, q, "{} -> {}", s, q.canonical());
            prop_assert!(q.units_ceil().abs() <= i128::from(i64::MAX) + 1);
        }
    }

    #[test]
    fn arbitrary_text_never_panics_a_parser(s in ".{0,200}") {
        let _ = Quantity::parse(&s);
        let _ = Selector::parse(&s);
        let _ = FieldSelector::parse(&s);
        let _ = document::parse_yaml(s.as_bytes());
        let _ = document::parse_json(s.as_bytes());
    }

    #[test]
    fn binary_fractions_round_up_to_exactly_the_next_byte(
        whole in 0u64..1_000_000_000,
        frac in "[0-9]{0,9}",
        (suffix, shift) in prop::sample::select(vec![("Ki", 10u32), ("Mi", 20), ("Gi", 30)]),
    ) {
        let text = if frac.is_empty() { format!("{whole}{suffix}") } else { format!("{whole}.{frac}{suffix}") };
        // Reference: (whole.frac * 2^shift) rounded up, in u128.
        let scale = 10u128.pow(frac.len() as u32);
        let digits = u128::from(whole) * scale + frac.parse::<u128>().unwrap_or(0);
        let exact = digits << shift;
        let bytes = exact / scale + u128::from(!exact.is_multiple_of(scale));
        match Quantity::parse(&text) {
            Ok(q) => prop_assert_eq!(q.bytes() as u128, bytes, "{}", text),
            Err(e) => {
                prop_assert_eq!(e, QuantityError::TooLarge, "{}", text);
                prop_assert!(bytes > i64::MAX as u128);
            }
        }
    }

    #[test]
    fn whole_byte_counts_parse_exactly(n in 0i64..i64::MAX) {
        prop_assert_eq!(Quantity::parse(&n.to_string()).unwrap().bytes(), n);
        let padded = format!("{n}.{}", "0".repeat(40));
        prop_assert_eq!(Quantity::parse(&padded).unwrap().bytes(), n);
    }

    #[test]
    fn equality_selectors_match_as_their_labels_say(
        labels in prop::collection::btree_map("[a-c]", "[x-z]", 0..3),
        wanted in prop::collection::btree_map("[a-c]", ("[x-z]", any::<bool>()), 1..3),
    ) {
        let text: Vec<String> = wanted
            .iter()
            .map(|(k, (v, eq))| format!("{k}{}{v}", if *eq { "=" } else { "!=" }))
            .collect();
        let selector = Selector::parse(&text.join(",")).unwrap();
        let expected = wanted.iter().all(|(k, (v, eq))| (labels.get(k) == Some(v)) == *eq);
        prop_assert_eq!(selector.matches(&labels), expected);
    }

    #[test]
    fn set_selectors_match_as_their_labels_say(
        labels in prop::collection::btree_map("[a-c]", "[x-z]", 0..3),
        key in "[a-c]",
        values in prop::collection::btree_set("[x-z]", 1..3),
        negated in any::<bool>(),
    ) {
        let list: Vec<&str> = values.iter().map(String::as_str).collect();
        let text = format!("{key} {} ({})", if negated { "notin" } else { "in" }, list.join(","));
        let selector = Selector::parse(&text).unwrap();
        let inside = labels.get(&key).is_some_and(|v| values.contains(v));
        prop_assert_eq!(selector.matches(&labels), inside != negated, "{}", text);
    }

    #[test]
    fn json_patches_never_panic_or_nest_past_the_limit(
        doc in json_value(),
        ops in prop::collection::vec(json_patch_op(), 0..12),
    ) {
        let mut patched = doc.clone();
        let _ = patch::apply_json_patch(&mut patched, &Value::Array(ops), 1 << 16);
        prop_assert!(document::measure(&patched).depth <= MAX_DEPTH.max(document::measure(&doc).depth));
    }

    #[test]
    fn merge_patches_are_idempotent(doc in json_value(), p in json_value()) {
        if p.is_object() {
            let mut once = doc.clone();
            patch::apply_merge_patch(&mut once, &p).unwrap();
            let mut twice = once.clone();
            patch::apply_merge_patch(&mut twice, &p).unwrap();
            prop_assert_eq!(once, twice);
        }
    }

    #[test]
    fn strategic_merges_never_panic(doc in json_value(), p in json_value()) {
        let mut d = doc;
        let _ = patch::apply_strategic_merge_patch(&mut d, &p);
        let _ = patch::apply_configuration_merge(&mut d, &p);
    }

    #[test]
    fn finalizers_merge_as_a_set_in_order(
        before in prop::collection::vec("[a-d]", 0..6),
        added in prop::collection::vec("[a-d]", 0..6),
    ) {
        let mut doc = json!({"metadata": {"finalizers": before}});
        patch::apply_strategic_merge_patch(&mut doc, &json!({"metadata": {"finalizers": added}})).unwrap();
        let got: Vec<String> = serde_json::from_value(doc["metadata"]["finalizers"].clone()).unwrap();
        let mut expected = before.clone();
        for a in &added {
            if !expected.contains(a) {
                expected.push(a.clone());
            }
        }
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn keyed_lists_keep_one_item_per_key(
        before in prop::collection::vec(("[a-d]", "[0-9]"), 0..6),
        patch_items in prop::collection::vec(("[a-d]", "[0-9]", any::<bool>()), 0..6),
    ) {
        let item = |(n, v): &(String, String)| json!({"name": n, "v": v});
        // Keys are unique in what Kubernetes stores.
        let before: BTreeMap<String, String> = before.into_iter().collect();
        let mut doc = json!({"spec": {"volumes": before.iter().map(|(n, v)| item(&(n.clone(), v.clone()))).collect::<Vec<_>>()}});
        let p: Vec<Value> = patch_items
            .iter()
            .map(|(n, v, delete)| if *delete { json!({"name": n, "$patch": "delete"}) } else { json!({"name": n, "v": v}) })
            .collect();
        patch::apply_strategic_merge_patch(&mut doc, &json!({"spec": {"volumes": p}})).unwrap();
        let mut expected = before;
        for (n, v, delete) in &patch_items {
            if *delete { expected.remove(n); } else { expected.insert(n.clone(), v.clone()); }
        }
        let got: BTreeMap<String, String> = doc["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["name"].as_str().unwrap().to_string(), i["v"].as_str().unwrap().to_string()))
            .collect();
        prop_assert_eq!(doc["spec"]["volumes"].as_array().unwrap().len(), got.len(), "no duplicate keys");
        prop_assert_eq!(got, expected);
    }
}
