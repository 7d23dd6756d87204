//! `train --resume`: the record of a run's settings that every model file carries, and the
//! checks that a file can be continued by the command at hand.

use std::path::Path;

use ienk::mlp::Layout;

use crate::error::{CliError, Result};
use crate::model_io;
use crate::progress;
use crate::train::{OptimizerKind, TrainConfig};

/// The settings that decide a run's trajectory, as `flag=value` pairs in a fixed order (the
/// metadata entry `settings` of every model `train` writes). Left out: what does not change the
/// numbers (--epochs, which only says where to stop; --store-perturbations; --progress; the
/// files) and --threads (which changes sgd, nag and adam in their last bits only). O(1).
pub fn settings_record(cfg: &TrainConfig) -> String {
    let mut pairs = vec![
        ("optimizer", cfg.optimizer.name().to_string()),
        ("lr", cfg.lr.to_string()),
        ("batch-size", cfg.batch_size.to_string()),
        ("hidden", cfg.hidden.to_string()),
        ("seed", cfg.seed.to_string()),
        ("limit", cfg.limit.map_or("none".into(), |n| n.to_string())),
        (
            "lr-decay",
            cfg.lr_decay.map_or("none".into(), |d| d.factor.to_string()),
        ),
        (
            "lr-decay-every",
            cfg.lr_decay.map_or("none".into(), |d| d.every.to_string()),
        ),
    ];
    // Recorded only when used, so that the records of runs without them stay as they were.
    if let Some(n) = cfg.validation {
        pairs.push(("validation", n.to_string()));
    }
    if cfg.keep_best {
        pairs.push(("keep-best", "true".into()));
    }
    // The direction summed in another order: the same run up to the last bits.
    if cfg.optimizer == OptimizerKind::Ienk && cfg.ensemble.low_memory {
        pairs.push(("low-memory", "true".into()));
    }
    let e = &cfg.ensemble;
    match cfg.optimizer {
        OptimizerKind::Ienk => pairs.extend([
            ("particles", e.particles.to_string()),
            ("sigma-scale", e.sigma_scale.to_string()),
            ("form", format!("{:?}", e.form).to_lowercase()),
            ("antithetic", e.antithetic.to_string()),
            ("rank", e.rank.to_string()),
            ("center", e.center.to_string()),
            ("clip", e.clip.map_or("none".into(), |c| c.to_string())),
            ("momentum", e.momentum.to_string()),
            ("normalize", e.normalize.to_string()),
            ("update", if e.adam { "adam" } else { "plain" }.to_string()),
        ]),
        OptimizerKind::Eki => pairs.extend([
            ("particles", e.particles.to_string()),
            ("sigma-scale", e.sigma_scale.to_string()),
            ("eki-eps", e.eps.to_string()),
            ("inflation", e.inflation.to_string()),
            ("randomize-every", e.randomize_every.to_string()),
        ]),
        OptimizerKind::Sgd | OptimizerKind::Nag | OptimizerKind::Adam => {}
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A saved run to continue: its parameters, the epochs they have had and their test accuracy.
#[derive(Debug)]
pub struct Checkpoint {
    /// The parameters.
    pub theta: Vec<f32>,
    /// Epochs done.
    pub epochs: u32,
    /// Test accuracy after them.
    pub test_accuracy: f64,
}

/// The flags on which two settings records differ, as `--flag A there, B here`.
fn differences(there: &str, here: &str) -> Vec<String> {
    let pairs = |s: &str| -> Vec<(String, String)> {
        s.split(' ')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let (there, here) = (pairs(there), pairs(here));
    let value = |list: &[(String, String)], k: &str| {
        list.iter()
            .find(|(key, _)| key == k)
            .map_or("(not recorded)".to_string(), |(_, v)| v.clone())
    };
    let mut keys: Vec<&String> = here.iter().map(|(k, _)| k).collect();
    keys.extend(
        there
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !here.iter().any(|(h, _)| h == *k)),
    );
    keys.into_iter()
        .filter(|k| value(&there, k) != value(&here, k))
        .map(|k| format!("--{k} {} there, {} here", value(&there, k), value(&here, k)))
        .collect()
}

/// Reads the model at `path` and checks that `cfg` (for `layout`) continues its run: it records
/// the same settings, and has had fewer than `cfg.epochs` epochs. Every refusal is bad input
/// that names the file and what to change. O(file size).
pub fn load_checkpoint(path: &Path, cfg: &TrainConfig, layout: &Layout) -> Result<Checkpoint> {
    let refuse = |why: String| CliError::BadInput(format!("--resume {}: {why}", path.display()));
    if !path.exists() {
        return Err(refuse(
            "no such file: it should be the --out of the run to continue".into(),
        ));
    }
    let model = model_io::load_model(path)?;
    let record = model.metadata.settings.as_deref().ok_or_else(|| {
        refuse(
            "the file does not record its run's settings (written by another program or an older ienk-cli)"
                .into(),
        )
    })?;
    if record.split(' ').any(|pair| pair == "keep-best=true") {
        return Err(refuse(
            "the run kept its best epoch (--keep-best), which may not be its last: it cannot be continued"
                .into(),
        ));
    }
    let wanted = settings_record(cfg);
    if record != wanted {
        return Err(refuse(format!(
            "this command's settings differ from the run's: {}; give the run's flags",
            differences(record, &wanted).join("; ")
        )));
    }
    if model.layout != *layout {
        return Err(refuse(format!(
            "holds a 784-{}-10 network, this run trains 784-{}-10",
            model.layout.hidden, layout.hidden
        )));
    }
    let entry = |key: &str, value: &Option<String>| -> Result<String> {
        value
            .clone()
            .ok_or_else(|| refuse(format!("its metadata has no {key}")))
    };
    let epochs_text = entry("epochs", &model.metadata.epochs)?;
    let epochs: u32 = epochs_text
        .parse()
        .map_err(|_| refuse(format!("its metadata's epochs {epochs_text:?} is not a count")))?;
    let accuracy_text = entry("test_accuracy", &model.metadata.test_accuracy)?;
    let test_accuracy: f64 = accuracy_text.parse().map_err(|_| {
        refuse(format!(
            "its metadata's test_accuracy {accuracy_text:?} is not a number"
        ))
    })?;
    if epochs >= cfg.epochs {
        return Err(refuse(format!(
            "the run has had {} already; ask for more with --epochs",
            progress::counted(epochs as usize, "epoch")
        )));
    }
    Ok(Checkpoint {
        theta: model.theta,
        epochs,
        test_accuracy,
    })
}

#[cfg(test)]
mod tests {
    use super::differences;

    #[test]
    fn differences_name_each_changed_flag_once() {
        let there = "optimizer=ienk lr=0.001 seed=0 clip=none";
        let here = "optimizer=ienk lr=0.002 seed=0 clip=2";
        assert_eq!(
            differences(there, here),
            ["--lr 0.001 there, 0.002 here", "--clip none there, 2 here"]
        );
        assert_eq!(
            differences("optimizer=sgd old=1", "optimizer=sgd"),
            ["--old 1 there, (not recorded) here"]
        );
        assert!(differences(here, here).is_empty());
    }
}
