//! Immutable per-proxy xDS snapshots: every resource of every type, each type versioned by a
//! hash of its content so an unchanged type is never pushed again.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

use crate::TypeUrl;

/// All resources of one type in a snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// Content version: identical resources give identical versions.
    pub version: String,
    /// Resources by name.
    pub items: BTreeMap<String, Any>,
}

impl Resources {
    /// Resources with their content version.
    pub fn new(items: BTreeMap<String, Any>) -> Resources {
        let mut hasher = DefaultHasher::new();
        hash_items(&items, &mut hasher);
        Resources {
            version: version(&hasher),
            items,
        }
    }

    /// Encodes `msg` as an `Any`.
    pub fn encode<M: Message + Name>(msg: &M) -> Any {
        Any {
            type_url: M::type_url(),
            value: msg.encode_to_vec(),
        }
    }
}

fn hash_items(items: &BTreeMap<String, Any>, hasher: &mut DefaultHasher) {
    for (name, any) in items {
        name.hash(hasher);
        any.value.hash(hasher);
    }
}

fn version(hasher: &DefaultHasher) -> String {
    format!("{:016x}", hasher.finish())
}

/// The complete configuration for one proxy at one moment. Types that are the same for many
/// proxies (routes, endpoints) are shared between their snapshots, not copied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    types: BTreeMap<TypeUrl, Arc<Resources>>,
}

impl Snapshot {
    /// Starts an empty snapshot; add resources with [`SnapshotBuilder::insert`] and
    /// [`SnapshotBuilder::share`], then [`SnapshotBuilder::seal`].
    pub fn builder() -> SnapshotBuilder {
        SnapshotBuilder::default()
    }

    /// The resources of one type (empty when the snapshot has none).
    pub fn resources(&self, type_url: TypeUrl) -> Option<&Resources> {
        self.types.get(&type_url).map(|r| &**r)
    }

    /// The version of one type, `""` when the type is empty.
    pub fn version(&self, type_url: TypeUrl) -> &str {
        self.types
            .get(&type_url)
            .map(|r| r.version.as_str())
            .unwrap_or("")
    }
}

/// Collects resources for a [`Snapshot`].
#[derive(Debug, Default)]
pub struct SnapshotBuilder {
    shared: BTreeMap<TypeUrl, Arc<Resources>>,
    types: BTreeMap<TypeUrl, BTreeMap<String, Any>>,
}

impl SnapshotBuilder {
    /// Adds one resource under `name`; a later insert with the same name replaces it.
    pub fn insert<M: Message + Name>(&mut self, type_url: TypeUrl, name: &str, msg: &M) {
        self.types
            .entry(type_url)
            .or_default()
            .insert(name.to_owned(), Resources::encode(msg));
    }

    /// Uses `resources`, shared with other snapshots, for `type_url`. Resources also inserted
    /// for that type are added to a copy (and override shared ones of the same name).
    pub fn share(&mut self, type_url: TypeUrl, resources: Arc<Resources>) {
        self.shared.insert(type_url, resources);
    }

    /// Computes every type's version and freezes the snapshot.
    pub fn seal(mut self) -> Snapshot {
        let mut types = BTreeMap::new();
        for type_url in TypeUrl::ALL {
            let own = self.types.remove(&type_url);
            let resources = match (self.shared.remove(&type_url), own) {
                (Some(shared), None) => shared,
                (None, own) => Arc::new(Resources::new(own.unwrap_or_default())),
                (Some(shared), Some(own)) => {
                    // Versioned by the shared version plus the own items: no rehash of the
                    // shared content.
                    let mut hasher = DefaultHasher::new();
                    shared.version.hash(&mut hasher);
                    hash_items(&own, &mut hasher);
                    let mut items = shared.items.clone();
                    items.extend(own);
                    Arc::new(Resources {
                        version: version(&hasher),
                        items,
                    })
                }
            };
            types.insert(type_url, resources);
        }
        Snapshot { types }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;

    fn cluster(name: &str) -> Cluster {
        Cluster {
            name: name.to_owned(),
            ..Cluster::default()
        }
    }

    #[test]
    fn version_follows_content() {
        let build = |names: &[&str]| {
            let mut b = Snapshot::builder();
            for n in names {
                b.insert(TypeUrl::Cluster, n, &cluster(n));
            }
            b.seal()
        };
        let a = build(&["a", "b"]);
        let b = build(&["b", "a"]);
        let c = build(&["a"]);
        assert_eq!(a.version(TypeUrl::Cluster), b.version(TypeUrl::Cluster));
        assert_ne!(a.version(TypeUrl::Cluster), c.version(TypeUrl::Cluster));
        assert_eq!(
            a.version(TypeUrl::Listener),
            c.version(TypeUrl::Listener),
            "empty types share a version"
        );
        let shared = Arc::new(a.resources(TypeUrl::Cluster).unwrap().clone());
        let mut with_local = Snapshot::builder();
        with_local.share(TypeUrl::Cluster, shared.clone());
        with_local.insert(TypeUrl::Cluster, "local", &cluster("local"));
        let with_local = with_local.seal();
        let merged = with_local.resources(TypeUrl::Cluster).unwrap();
        assert_eq!(merged.items.len(), 3);
        assert_ne!(merged.version, shared.version);
        let mut only_shared = Snapshot::builder();
        only_shared.share(TypeUrl::Cluster, shared.clone());
        assert_eq!(only_shared.seal(), a, "a shared type is used as is");
        let any = &a.resources(TypeUrl::Cluster).unwrap().items["a"];
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.config.cluster.v3.Cluster"
        );
    }
}
