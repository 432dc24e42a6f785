//! Settings a Service takes from at most one resource (a retry budget, a rate limit): which
//! resource claimed each Service first, so that a second claim is reported naming both.

use std::collections::HashMap;

use crate::error::ConfigError;
use crate::meta::Meta;
use crate::policy::TargetRef;
use crate::validate::Validator;
use crate::yaml::{FieldPath, Node, Pos};

/// A setting that only one resource may give a Service, as its messages name it.
pub(crate) struct Setting {
    /// The kind of the resources that set it, e.g. `BackendPolicy`.
    pub(crate) kind: &'static str,
    /// What a resource sets, with its article: `a retry budget`.
    pub(crate) what: &'static str,
    /// The rule a second claim breaks: `one retryBudget per Service`.
    pub(crate) rule: &'static str,
}

/// Who set one [`Setting`] for each Service, across every file of a load.
#[derive(Default)]
pub(crate) struct TargetClaims {
    /// (namespace, Service) to the resource's name, file and the position of its targetRef.
    owners: HashMap<(String, String), (String, String, Pos)>,
}

impl TargetClaims {
    /// Records that the resource `meta` (from `file`, rooted at `root`) sets `setting` for the
    /// Services of its `spec.targetRefs`, adding an error at each targetRef whose Service
    /// already has it from another resource.
    pub(crate) fn claim(
        &mut self,
        setting: &Setting,
        meta: &Meta,
        targets: &[TargetRef],
        file: &str,
        root: &Node,
        errors: &mut Vec<ConfigError>,
    ) {
        let ns = &meta.namespace;
        let refs = FieldPath::root().key("spec").key("targetRefs");
        for (i, t) in targets.iter().enumerate() {
            let path = refs.index(i).key("name");
            let pos = root.locate(&path);
            let key = (ns.clone(), t.name.clone());
            match self.owners.get(&key) {
                Some((first, first_file, first_pos)) if *first != meta.name => {
                    let Setting { kind, what, rule } = setting;
                    let message = format!(
                        "Service `{ns}/{}` already has {what} from {kind} `{ns}/{first}` ({first_file}:{}:{}); {kind} `{ns}/{}` cannot set another ({rule})",
                        t.name, first_pos.line, first_pos.column, meta.name
                    );
                    Validator::new(file, root, errors).error_at(pos, &path, message);
                }
                Some(_) => {}
                None => {
                    let owner = (meta.name.clone(), file.to_owned(), pos);
                    self.owners.insert(key, owner);
                }
            }
        }
    }
}
