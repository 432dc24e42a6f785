//! Loading: files of multi-document YAML into one [`ConfigSet`], collecting every problem in
//! every file, including names defined twice across files.

mod document;

pub use document::{GATEWAY_API_VERSION, GATEWAY_API_VERSION_BETA, TRELLIS_API_VERSION};

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::backend_policy::{self, BackendPolicy, BackendSettings, RetryBudget};
use crate::claim::TargetClaims;
use crate::error::{ConfigError, ConfigErrors};
use crate::fault::FaultInjection;
use crate::mesh::{MeshConfig, MeshConfigSpec};
use crate::policy::AuthorizationPolicy;
use crate::ratelimit::{RateLimit, SERVICE_LIMIT};
use crate::route::{GrpcRoute, HttpRoute};
use crate::service::Service;
use crate::validate::Validator;
use crate::yaml::{FieldPath, Node, Pos, parse_file};
use document::Resource;

/// Every resource of a configuration, each kind in load order (files by name, then documents
/// in file order).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigSet {
    /// `kind: Service` resources.
    pub services: Vec<Service>,
    /// `kind: HTTPRoute` resources.
    pub http_routes: Vec<HttpRoute>,
    /// `kind: GRPCRoute` resources.
    pub grpc_routes: Vec<GrpcRoute>,
    /// `kind: MeshConfig` (at most one).
    pub mesh_configs: Vec<MeshConfig>,
    /// `kind: AuthorizationPolicy` resources.
    pub authorization_policies: Vec<AuthorizationPolicy>,
    /// `kind: BackendPolicy` resources.
    pub backend_policies: Vec<BackendPolicy>,
    /// `kind: FaultInjection` resources.
    pub fault_injections: Vec<FaultInjection>,
    /// `kind: RateLimit` resources.
    pub rate_limits: Vec<RateLimit>,
}

impl ConfigSet {
    /// The Service `name` in `namespace`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.metadata.name == name && s.metadata.namespace == namespace)
    }

    /// Whether there are no resources at all.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.http_routes.is_empty()
            && self.grpc_routes.is_empty()
            && self.mesh_configs.is_empty()
            && self.authorization_policies.is_empty()
            && self.backend_policies.is_empty()
            && self.fault_injections.is_empty()
            && self.rate_limits.is_empty()
    }

    /// The FaultInjection `name` in `namespace`.
    pub fn fault_injection(&self, namespace: &str, name: &str) -> Option<&FaultInjection> {
        self.fault_injections
            .iter()
            .find(|f| f.metadata.name == name && f.metadata.namespace == namespace)
    }

    /// The RateLimit `name` in `namespace`.
    pub fn rate_limit(&self, namespace: &str, name: &str) -> Option<&RateLimit> {
        self.rate_limits
            .iter()
            .find(|r| r.metadata.name == name && r.metadata.namespace == namespace)
    }

    /// The RateLimit whose `targetRefs` name the Service `name` in `namespace`, if any
    /// (validation allows at most one).
    pub fn service_rate_limit(&self, namespace: &str, name: &str) -> Option<&RateLimit> {
        self.rate_limits.iter().find(|r| r.targets(namespace, name))
    }

    /// The retry budget a BackendPolicy sets for the Service `name` in `namespace`, if any
    /// (validation allows at most one).
    pub fn retry_budget(&self, namespace: &str, name: &str) -> Option<&RetryBudget> {
        self.backend_settings(namespace, name).retry_budget
    }

    /// What the BackendPolicies targeting the Service `name` in `namespace` set for it, each
    /// setting from the policy that sets it (validation allows at most one per setting).
    pub fn backend_settings(&self, namespace: &str, name: &str) -> BackendSettings<'_> {
        let mut settings = BackendSettings::default();
        for p in self
            .backend_policies
            .iter()
            .filter(|p| p.targets(namespace, name))
        {
            settings.add(&p.spec);
        }
        settings
    }

    /// The mesh settings: the MeshConfig's, or the defaults without one.
    pub fn mesh_config(&self) -> MeshConfigSpec {
        self.mesh_configs
            .first()
            .map(|m| m.spec.clone())
            .unwrap_or_default()
    }
}

/// Loads every `*.yaml` and `*.yml` file directly in `dir` (not in subdirectories), in file
/// name order, and every document of each.
///
/// Errors name files as `dir` joined with the file name. All problems in all files are
/// returned, not just the first.
pub fn load_dir(dir: &Path) -> Result<ConfigSet, ConfigErrors> {
    DirLoader::default().load(dir)
}

/// Loads a directory again and again, as [`load_dir`] does, but parses only the files whose
/// text changed since its last load, and reads only those whose [`FileStamp`] changed: a
/// watched directory of many files reloads in the time it takes to look at them.
#[derive(Default)]
pub struct DirLoader {
    files: HashMap<PathBuf, ParsedText>,
}

/// Files changed this recently are read again on the next load even when their stamp is the
/// same: the kernel stamps files from a clock that ticks every few milliseconds, so a second
/// write of the same length within one tick of the first leaves the stamp as it was.
const RACY: Duration = Duration::from_secs(1);

/// What the file system says of a file: a write changes its change time (which no one can set
/// back), so an equal stamp means the same text. The change time is the file system's clock:
/// one lagging this machine's by more than [`RACY`] (a network file system) can hide a change.
#[derive(Clone, Copy, PartialEq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
}

impl FileStamp {
    /// The stamp of `meta`, read at `now`; `None` when the file changed too recently for the
    /// stamp to be trusted (see [`RACY`]), or when its file system keeps whole seconds only
    /// (no nanoseconds), where a second write can keep the stamp for longer than that.
    fn of(meta: &std::fs::Metadata, now: SystemTime) -> Option<FileStamp> {
        if meta.ctime_nsec() == 0 {
            return None;
        }
        let changed = UNIX_EPOCH
            + Duration::new(
                u64::try_from(meta.ctime()).ok()?,
                u32::try_from(meta.ctime_nsec()).ok()?,
            );
        if now.duration_since(changed).ok()? < RACY {
            return None;
        }
        Some(FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        })
    }
}

/// One file's text and what it parsed to.
struct ParsedText {
    /// The file's stamp when `text` was read, if it could be trusted.
    stamp: Option<FileStamp>,
    text: String,
    /// Syntax and document errors.
    errors: Vec<ConfigError>,
    /// Each typed document with its root, which locates errors found across files.
    documents: Vec<(Node, Resource)>,
}

impl ParsedText {
    fn parse(file: &str, text: String, stamp: Option<FileStamp>) -> ParsedText {
        let parsed = parse_file(&text);
        let mut errors: Vec<ConfigError> = parsed
            .errors
            .iter()
            .map(|e| ConfigError {
                file: file.to_owned(),
                line: e.pos().line,
                column: e.pos().column,
                field: e.path().to_string(),
                message: e.to_string(),
            })
            .collect();
        let documents = parsed
            .documents
            .into_iter()
            .filter_map(|root| {
                let resource = document::load(file, &root, &mut errors)?;
                Some((root, resource))
            })
            .collect();
        ParsedText {
            stamp,
            text,
            errors,
            documents,
        }
    }
}

impl DirLoader {
    /// Loads `dir` as [`load_dir`] does, reusing what earlier loads parsed.
    pub fn load(&mut self, dir: &Path) -> Result<ConfigSet, ConfigErrors> {
        let mut loader = Loader::default();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                loader.io_error(dir, &format!("cannot read the config directory: {e}"));
                return loader.finish();
            }
        };
        let now = SystemTime::now();
        let mut files: Vec<(PathBuf, Option<FileStamp>)> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "yaml" || x == "yml")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .filter_map(|p| {
                let meta = std::fs::metadata(&p)
                    .ok()
                    .filter(std::fs::Metadata::is_file)?;
                let stamp = FileStamp::of(&meta, now);
                Some((p, stamp))
            })
            .collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let present: HashSet<&PathBuf> = files.iter().map(|(path, _)| path).collect();
        self.files.retain(|path, _| present.contains(path));
        for (path, stamp) in files {
            let name = path.display().to_string();
            if let Some(cached) = self.files.get(&path)
                && cached.stamp.is_some()
                && cached.stamp == stamp
            {
                loader.add_parsed(&name, cached);
                continue;
            }
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) => {
                    self.files.remove(&path);
                    loader.io_error(&path, &format!("cannot read the file: {e}"));
                    continue;
                }
            };
            let parsed = match self.files.get_mut(&path) {
                Some(cached) if cached.text == text => {
                    cached.stamp = stamp;
                    cached
                }
                _ => self
                    .files
                    .entry(path)
                    .insert_entry(ParsedText::parse(&name, text, stamp))
                    .into_mut(),
            };
            loader.add_parsed(&name, parsed);
        }
        loader.finish()
    }
}

/// Loads every document of one file's text; `file` names it in errors.
pub fn load_str(file: &str, text: &str) -> Result<ConfigSet, ConfigErrors> {
    let mut loader = Loader::default();
    loader.add(file, text);
    loader.finish()
}

/// Accumulates resources and errors over several files.
#[derive(Default)]
struct Loader {
    set: ConfigSet,
    errors: Vec<ConfigError>,
    /// Where each (kind, namespace, name) was first defined: file and position of its name.
    seen: HashMap<(&'static str, String, String), (String, Pos)>,
    /// The BackendPolicy that set each Service's setting, one per [`backend_policy::SETTINGS`].
    backend: [TargetClaims; backend_policy::SETTINGS.len()],
    /// The RateLimit that targets each Service.
    limits: TargetClaims,
}

impl Loader {
    fn add(&mut self, file: &str, text: &str) {
        self.add_parsed(file, &ParsedText::parse(file, text.to_owned(), None));
    }

    fn add_parsed(&mut self, file: &str, parsed: &ParsedText) {
        let start = self.errors.len();
        self.errors.extend(parsed.errors.iter().cloned());
        for (root, resource) in &parsed.documents {
            self.insert(file, root, resource.clone());
        }
        // Parse errors and document errors interleave by position, as a reader expects.
        self.errors[start..].sort_by_key(|e| (e.line, e.column));
    }

    fn insert(&mut self, file: &str, root: &Node, resource: Resource) {
        let meta = resource.meta();
        let name_path = FieldPath::root().key("metadata").key("name");
        let pos = root.locate(&name_path);
        let key = (resource.kind(), meta.namespace.clone(), meta.name.clone());
        if let Some((first_file, first)) = self.seen.get(&key) {
            let message = format!(
                "duplicate {} `{}/{}`, first defined at {first_file}:{}:{}; names must be unique per kind and namespace",
                key.0, key.1, key.2, first.line, first.column
            );
            Validator::new(file, root, &mut self.errors).error_at(pos, &name_path, message);
            return;
        }
        if let Resource::MeshConfig(_) = &resource
            && let Some(first) = self.set.mesh_configs.first()
        {
            let message = format!(
                "a second MeshConfig; `{}` already configures the mesh (there is one per mesh)",
                first.metadata.name
            );
            Validator::new(file, root, &mut self.errors).error_at(pos, &name_path, message);
            return;
        }
        self.seen.insert(key, (file.to_owned(), pos));
        match resource {
            Resource::MeshConfig(r) => self.set.mesh_configs.push(r),
            Resource::AuthorizationPolicy(r) => self.set.authorization_policies.push(r),
            Resource::BackendPolicy(r) => {
                let (meta, targets) = (&r.metadata, &r.spec.target_refs);
                let settings = backend_policy::SETTINGS.iter().zip(&mut self.backend);
                for ((setting, sets), claims) in settings {
                    if sets(&r.spec) {
                        claims.claim(setting, meta, targets, file, root, &mut self.errors);
                    }
                }
                self.set.backend_policies.push(*r);
            }
            Resource::FaultInjection(r) => self.set.fault_injections.push(r),
            Resource::RateLimit(r) => {
                let (meta, targets) = (&r.metadata, &r.spec.target_refs);
                let errors = &mut self.errors;
                self.limits
                    .claim(&SERVICE_LIMIT, meta, targets, file, root, errors);
                self.set.rate_limits.push(r);
            }
            Resource::Service(r) => self.set.services.push(r),
            Resource::HttpRoute(r) => self.set.http_routes.push(r),
            Resource::GrpcRoute(r) => self.set.grpc_routes.push(r),
        }
    }

    fn io_error(&mut self, path: &Path, message: &str) {
        self.errors.push(ConfigError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            field: String::new(),
            message: message.to_owned(),
        });
    }

    fn finish(self) -> Result<ConfigSet, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(self.set)
        } else {
            Err(ConfigErrors(self.errors))
        }
    }
}

/// For tests: loads `text` as `file` and describes how its errors differ from the single
/// expected `(line, column, field, message)`; `None` when they match.
#[cfg(test)]
pub(crate) fn error_mismatch(
    file: &str,
    text: &str,
    want: (usize, usize, &str, &str),
) -> Option<String> {
    let got: Vec<(usize, usize, String, String)> = match load_str(file, text) {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .iter()
            .map(|e| (e.line, e.column, e.field.clone(), e.message.clone()))
            .collect(),
    };
    let matches =
        matches!(got.as_slice(), [(l, c, f, m)] if (*l, *c, f.as_str(), m.as_str()) == want);
    (!matches).then(|| format!("{text}\n  got:  {got:?}\n  want: {want:?}"))
}

#[cfg(test)]
mod tests;
