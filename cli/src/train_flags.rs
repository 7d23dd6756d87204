//! Which `train` flags go with which optimizer: a flag the chosen optimizer would not read, or a
//! combination in which one flag would be ignored, is refused before anything runs, so that a
//! run never silently differs from its command.

use crate::args::{TrainArgs, UpdateArg};
use crate::train::OptimizerKind;

/// Flags read by `ienk` and `eki` only (clap ids: the field names).
const ENSEMBLE: [&str; 2] = ["particles", "sigma_scale"];

/// Flags read by `ienk` only.
const IENK: [&str; 10] = [
    "form",
    "antithetic",
    "rank",
    "momentum",
    "normalize",
    "update",
    "center",
    "clip",
    "store_perturbations",
    "low_memory",
];

/// Flags read by `eki` only.
const EKI: [&str; 3] = ["eki_eps", "inflation", "randomize_every"];

/// The flag as typed: `--` and the id with dashes.
fn flag(id: &str) -> String {
    format!("--{}", id.replace('_', "-"))
}

/// `--a`, `--a and --b`, `--a, --b and --c`.
fn flag_list(ids: &[&str]) -> String {
    let flags: Vec<String> = ids.iter().map(|id| flag(id)).collect();
    match flags.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => flags.concat(),
    }
}

/// Checks `train`'s flags against its optimizer. `given` holds the clap ids of the flags typed
/// on the command line (defaults do not count). Refused, with the flags named:
/// - a flag the optimizer does not read (`--rank` with `eki`, `--particles` with `sgd`);
/// - `--store-perturbations` with low-rank members (`--rank` above 0), which are rebuilt from
///   their factors and never stored;
/// - `--low-memory` with full-rank members (whose direction is summed as it goes on one thread
///   already), with `--center` (which needs every coefficient first), or with `--threads`
///   above 1;
/// - `--momentum` or `--normalize` with `--update adam`, whose Adam moments replace both;
/// - `--antithetic` with an odd `--particles`, which would leave a member without its pair;
/// - one member where the update is the spread around the ensemble's mean (`eki`, `ienk
///   --center`): that spread is zero, so the model would never move.
///
/// O(number of flags).
pub fn check(a: &TrainArgs, given: &[String]) -> Result<(), String> {
    let is_given = |id: &&str| given.iter().any(|g| g == id);
    let (readers, foreign): (&str, Vec<&str>) = match a.optimizer {
        OptimizerKind::Sgd | OptimizerKind::Nag | OptimizerKind::Adam => (
            "the ensemble optimizers (ienk, eki)",
            ENSEMBLE
                .iter()
                .chain(&IENK)
                .chain(&EKI)
                .copied()
                .filter(is_given)
                .collect(),
        ),
        OptimizerKind::Ienk => ("eki", EKI.iter().copied().filter(is_given).collect()),
        OptimizerKind::Eki => ("ienk", IENK.iter().copied().filter(is_given).collect()),
    };
    if !foreign.is_empty() {
        let verb = if foreign.len() == 1 { "is" } else { "are" };
        return Err(format!(
            "{} {verb} read by {readers} only, not by --optimizer {}; remove {}",
            flag_list(&foreign),
            a.optimizer.name(),
            if foreign.len() == 1 { "it" } else { "them" },
        ));
    }
    let e = &a.ensemble;
    let spread_only = match a.optimizer {
        OptimizerKind::Eki => Some("eki moves the members along their spread around their mean"),
        OptimizerKind::Ienk if e.center => {
            Some("--center keeps only each member's difference from the members' mean coefficient")
        }
        _ => None,
    };
    if let (Some(why), 1) = (spread_only, e.particles) {
        return Err(format!(
            "{why}: one member has no spread, so the model would never move; give --particles \
             2 or more"
        ));
    }
    if a.optimizer != OptimizerKind::Ienk {
        return Ok(());
    }
    if e.store_perturbations && e.rank > 0 {
        return Err(format!(
            "--store-perturbations applies to full-rank members (--rank 0) only; with --rank {} each \
             member is rebuilt from its small factors and nothing is stored",
            e.rank
        ));
    }
    if e.low_memory {
        let why = if e.rank == 0 {
            Some(
                "applies to low-rank members (--rank above 0) only: full-rank members already sum \
                  the update's direction as they go on one thread"
                    .to_string(),
            )
        } else if e.center {
            Some(
                "cannot go with --center, which needs every member's coefficient before the \
                  first share of the direction is added"
                    .to_string(),
            )
        } else {
            a.threads
                .filter(|&n| n > 1)
                .map(|n| format!("sums the direction on one thread: give --threads 1, not {n}"))
        };
        if let Some(why) = why {
            return Err(format!("--low-memory {why}"));
        }
    }
    if e.update == UpdateArg::Adam {
        let ignored: Vec<&str> = ["momentum", "normalize"]
            .into_iter()
            .filter(|id| is_given(id))
            .collect();
        if !ignored.is_empty() {
            return Err(format!(
                "{} {} with --update plain only: --update adam scales the gradient estimate by its \
                 own moments",
                flag_list(&ignored),
                if ignored.len() == 1 { "works" } else { "work" },
            ));
        }
    }
    if e.antithetic && !e.particles.is_multiple_of(2) {
        return Err(format!(
            "--antithetic makes pairs of members (delta, -delta): --particles must be even, not {}",
            e.particles
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Cli;
    use clap::CommandFactory;

    #[test]
    fn every_ensemble_flag_is_listed_with_the_optimizers_its_help_names() {
        let cli = Cli::command();
        let train = cli.find_subcommand("train").unwrap();
        let mut seen = 0;
        for arg in train.get_arguments() {
            if arg.get_help_heading() != Some("Ensemble optimizers (ienk, eki)") {
                continue;
            }
            seen += 1;
            let id = arg.get_id().as_str();
            let help = arg.get_help().unwrap().to_string();
            let (list, name): (&[&str], &str) = if help.starts_with("ienk") {
                (&IENK, "IENK")
            } else if help.starts_with("eki:") {
                (&EKI, "EKI")
            } else {
                (&ENSEMBLE, "ENSEMBLE")
            };
            assert!(list.contains(&id), "--{id} ({help:?}) is missing from {name}");
        }
        assert_eq!(seen, ENSEMBLE.len() + IENK.len() + EKI.len());
    }

    #[test]
    fn flag_lists_read_as_english() {
        assert_eq!(flag_list(&["rank"]), "--rank");
        assert_eq!(flag_list(&["rank", "clip"]), "--rank and --clip");
        assert_eq!(
            flag_list(&["eki_eps", "rank", "store_perturbations"]),
            "--eki-eps, --rank and --store-perturbations"
        );
    }
}
