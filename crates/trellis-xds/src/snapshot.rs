//! Immutable per-proxy xDS snapshots: every resource of every type, each type versioned by a
//! hash of its content so an unchanged type is never pushed again.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

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

/// The complete configuration for one proxy at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    types: BTreeMap<TypeUrl, Resources>,
}

impl Snapshot {
    /// Starts an empty snapshot; add resources with [`Snapshot::insert`], then [`Snapshot::seal`].
    pub fn builder() -> SnapshotBuilder {
        SnapshotBuilder::default()
    }

    /// The resources of one type (empty when the snapshot has none).
    pub fn resources(&self, type_url: TypeUrl) -> Option<&Resources> {
        self.types.get(&type_url)
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
    types: BTreeMap<TypeUrl, BTreeMap<String, Any>>,
}

impl SnapshotBuilder {
    /// Adds one resource under `name`; a later insert with the same name replaces it.
    pub fn insert<M: Message + Name>(&mut self, type_url: TypeUrl, name: &str, msg: &M) {
        let any = Any {
            type_url: M::type_url(),
            value: msg.encode_to_vec(),
        };
        self.types
            .entry(type_url)
            .or_default()
            .insert(name.to_owned(), any);
    }

    /// Computes every type's version and freezes the snapshot.
    pub fn seal(self) -> Snapshot {
        let mut types = BTreeMap::new();
        for type_url in TypeUrl::ALL {
            let items = self.types.get(&type_url).cloned().unwrap_or_default();
            let mut hasher = DefaultHasher::new();
            for (name, any) in &items {
                name.hash(&mut hasher);
                any.value.hash(&mut hasher);
            }
            let version = format!("{:016x}", hasher.finish());
            types.insert(type_url, Resources { version, items });
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
        let any = &a.resources(TypeUrl::Cluster).unwrap().items["a"];
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.config.cluster.v3.Cluster"
        );
    }
}
