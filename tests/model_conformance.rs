//! Conformance of the tch models with the independent PyTorch reference
//! (`reference/pytorch/crammed.py`), through the committed goldens in `tests/golden/`
//! (written by `reference/pytorch/make_goldens.py`): for each tiny architecture, load the
//! reference weights into the tch model, run fp32 CPU forward and backward with dropout off, and
//! compare logits and loss (1e-5 relative) and every parameter's gradient (1e-4 relative to the
//! gradient's largest entry). Also the encoder output under a key-padding mask (the reference adds
//! -10000 to padded keys' scores; tch uses `scaled_dot_product_attention` with that additive mask)
//! and the variable names against the reference state dict.
mod common;

use crambench::model::{self, ArchConfig, MlmModel};
use std::collections::{BTreeSet, HashMap};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

struct Golden {
    cfg: ArchConfig,
    state_dict_keys: BTreeSet<String>,
    t: HashMap<String, Tensor>,
}

fn load(name: &str) -> Golden {
    let dir = common::repo_root().join("tests/golden");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap()).unwrap();
    let cfg: ArchConfig =
        serde_json::from_value(meta["arch"].clone()).expect("golden arch parses as [arch]");
    let state_dict_keys = meta["state_dict_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let t = Tensor::read_safetensors(dir.join(format!("{name}.safetensors")))
        .unwrap()
        .into_iter()
        .collect();
    Golden {
        cfg,
        state_dict_keys,
        t,
    }
}

/// max |a - b| / max |b|  (b: the reference).
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    let diff = (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[]);
    let scale = b.to_kind(Kind::Double).abs().max().double_value(&[]);
    diff / scale.max(1e-12)
}

/// Build the model and load the golden's weights into it.
fn model_with_golden_weights(g: &Golden) -> (VarStore, Box<dyn MlmModel>) {
    let vs = VarStore::new(Device::Cpu);
    let m = model::build(&vs.root(), &g.cfg).unwrap();
    let vars = vs.variables();
    tch::no_grad(|| {
        for (name, var) in vs.trainable_variables_with_names() {
            let src =
                g.t.get(&format!("param.{name}"))
                    .unwrap_or_else(|| panic!("golden has no weight for tch variable {name}"));
            var.shallow_clone().copy_(src);
        }
    });
    // Every reference parameter has a tch variable (the tied decoder weight is the embedding).
    let n_params = g.t.keys().filter(|k| k.starts_with("param.")).count();
    assert_eq!(n_params, vs.trainable_variables().len());
    let mut names: BTreeSet<String> = vars.keys().cloned().collect();
    if g.cfg.tie_weights {
        assert!(
            !names.contains("decoder.weight"),
            "tied decoder must not be a second variable"
        );
        names.insert("decoder.weight".into());
    }
    assert_eq!(
        names, g.state_dict_keys,
        "variable names differ from the reference state dict"
    );
    (vs, m)
}

trait VarsWithNames {
    fn trainable_variables_with_names(&self) -> Vec<(String, Tensor)>;
}

impl VarsWithNames for VarStore {
    fn trainable_variables_with_names(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

fn check(name: &str) {
    let g = load(name);
    let (vs, m) = model_with_golden_weights(&g);
    let ids = &g.t["input_ids"];
    let labels = &g.t["labels"];

    // Forward: logits of the selected rows, their labels, loss.
    let (logits, selected) = m.mlm_logits(ids, labels, false);
    let e = rel_err(&logits, &g.t["logits"]);
    eprintln!("{name}: logits relative error {e:e}");
    assert!(e <= 1e-5, "{name}: logits differ by {e:e} (relative)");
    assert!(
        selected.equal(&g.t["selected_labels"]),
        "{name}: selected labels differ"
    );
    let loss = m.mlm_loss(ids, labels, false);
    let e = rel_err(&loss, &g.t["loss"]);
    assert!(
        e <= 1e-5,
        "{name}: loss {} vs {} ({e:e})",
        loss.double_value(&[]),
        g.t["loss"].double_value(&[])
    );

    // Backward: every parameter's gradient.
    loss.backward();
    let mut worst = 0f64;
    for (pname, var) in vs.trainable_variables_with_names() {
        let grad = var.grad();
        assert!(grad.defined(), "{name}: no gradient for {pname}");
        let e = rel_err(&grad, &g.t[&format!("grad.{pname}")]);
        worst = worst.max(e);
        assert!(
            e <= 1e-4,
            "{name}: gradient of {pname} differs by {e:e} (relative)"
        );
    }

    eprintln!("{name}: worst gradient relative error {worst:e}");

    // Encoder with a key-padding mask, given as Int64 and as Bool.
    let mask = &g.t["attention_mask"];
    for mask in [mask.shallow_clone(), mask.to_kind(Kind::Bool)] {
        let h = tch::no_grad(|| m.encode(ids, Some(&mask), false));
        let e = rel_err(&h, &g.t["encoded_masked"]);
        assert!(e <= 1e-5, "{name}: masked encoder output differs by {e:e}");
    }

    // Static sparse prediction with fewer masked positions than round(p·B·S): the selected rows
    // then include ignored ones, which the mean CE skips (the reference's behaviour).
    if let Some(under) = g.t.get("labels_undercount") {
        let l = tch::no_grad(|| m.mlm_loss(ids, under, false));
        let e = rel_err(&l, &g.t["loss_undercount"]);
        assert!(e <= 1e-5, "{name}: undercount loss differs by {e:e}");
    }
}

#[test]
fn crammed_bert_matches_reference() {
    check("crammed-bert");
}

#[test]
fn crammed_bert_untied_matches_reference() {
    check("crammed-bert-untied");
}

#[test]
fn bert_c5_matches_reference() {
    check("bert-c5");
}

#[test]
fn bert_original_matches_reference() {
    check("bert-original");
}

#[test]
fn izsak_matches_reference() {
    check("izsak");
}
