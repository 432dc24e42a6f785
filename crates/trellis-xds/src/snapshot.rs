//! Immutable per-proxy xDS snapshots: every resource of every type, each type versioned by a
//! hash of its content so an unchanged type is never pushed again, and each resource hashed so
//! that the named types (RDS, EDS, SDS) can be pushed one changed resource at a time.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

use crate::TypeUrl;

/// One encoded resource and the hash of its encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// The resource as sent.
    pub any: Any,
    /// Hash of `any.value`: equal hashes mean a subscriber already holds this content.
    pub hash: u64,
}

impl Resource {
    /// Encodes `msg` as an `Any` and hashes it.
    pub fn encode<M: Message + Name>(msg: &M) -> Resource {
        let value = msg.encode_to_vec();
        let mut hasher = DefaultHasher::new();
        value.hash(&mut hasher);
        Resource {
            any: Any {
                type_url: M::type_url(),
                value,
            },
            hash: hasher.finish(),
        }
    }
}

/// Resources of one type, by name, with a content version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// Content version: identical resources give identical versions.
    pub version: String,
    /// Resources by name.
    pub items: BTreeMap<String, Resource>,
    /// What changed since the previous version, when it is known.
    pub changes: Option<Changes>,
}

/// The difference between two versions of the same resources.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    /// The earlier version.
    pub since: String,
    /// Names added, changed or removed since then.
    pub names: BTreeSet<String>,
}

impl Resources {
    /// Resources with their content version.
    pub fn new(items: BTreeMap<String, Resource>) -> Resources {
        let mut hasher = DefaultHasher::new();
        hash_items(&items, &mut hasher);
        Resources {
            version: version(&hasher),
            items,
            changes: None,
        }
    }

    /// Resources with their content version and what changed since `previous`, so that
    /// subscribers holding `previous` are updated without looking at every resource.
    pub fn following(items: BTreeMap<String, Resource>, previous: &Resources) -> Resources {
        let mut names = BTreeSet::new();
        let mut old = previous.items.iter().peekable();
        let mut new = items.iter().peekable();
        loop {
            let order = match (old.peek(), new.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((o, _)), Some((n, _))) => o.cmp(n),
            };
            match order {
                Ordering::Less => names.extend(old.next().map(|(name, _)| name.clone())),
                Ordering::Greater => names.extend(new.next().map(|(name, _)| name.clone())),
                Ordering::Equal => {
                    let (Some((name, o)), Some((_, n))) = (old.next(), new.next()) else {
                        break;
                    };
                    if o.hash != n.hash {
                        names.insert(name.clone());
                    }
                }
            }
        }
        let mut resources = Resources::new(items);
        resources.changes = Some(Changes {
            since: previous.version.clone(),
            names,
        });
        resources
    }
}

fn hash_items(items: &BTreeMap<String, Resource>, hasher: &mut DefaultHasher) {
    for (name, resource) in items {
        name.hash(hasher);
        resource.hash.hash(hasher);
    }
}

fn version(hasher: &DefaultHasher) -> String {
    format!("{:016x}", hasher.finish())
}

/// One type in a snapshot: resources shared with other snapshots plus the proxy's own, which
/// win over shared ones of the same name. Neither is copied into the other.
#[derive(Debug, Clone, Default)]
struct Layers {
    version: String,
    shared: Option<Arc<Resources>>,
    own: BTreeMap<String, Resource>,
}

impl Layers {
    fn get(&self, name: &str) -> Option<&Resource> {
        self.own
            .get(name)
            .or_else(|| self.shared.as_ref()?.items.get(name))
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &Resource)> {
        let shared = self.shared.iter().flat_map(|s| &s.items);
        self.own
            .iter()
            .chain(shared.filter(|(name, _)| !self.own.contains_key(*name)))
            .map(|(name, r)| (name.as_str(), r))
    }
}

/// The complete configuration for one proxy at one moment. Types that are the same for many
/// proxies (routes, endpoints, outbound clusters) are shared between their snapshots, not
/// copied.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    types: BTreeMap<TypeUrl, Layers>,
}

impl Snapshot {
    /// Starts an empty snapshot; add resources with [`SnapshotBuilder::insert`] and
    /// [`SnapshotBuilder::share`], then [`SnapshotBuilder::seal`].
    pub fn builder() -> SnapshotBuilder {
        SnapshotBuilder::default()
    }

    /// The resources of one type, by name (none when the snapshot has none of the type).
    pub fn iter(&self, type_url: TypeUrl) -> impl Iterator<Item = (&str, &Resource)> {
        self.types.get(&type_url).into_iter().flat_map(Layers::iter)
    }

    /// One resource by type and name.
    pub fn get(&self, type_url: TypeUrl, name: &str) -> Option<&Resource> {
        self.types.get(&type_url)?.get(name)
    }

    /// What changed in `type_url` since an earlier version, when the type has only shared
    /// resources that know it.
    pub fn changes(&self, type_url: TypeUrl) -> Option<&Changes> {
        let layers = self.types.get(&type_url)?;
        if layers.own.is_empty() {
            layers.shared.as_ref()?.changes.as_ref()
        } else {
            None
        }
    }

    /// The version of one type; empty types share one version.
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
    types: BTreeMap<TypeUrl, BTreeMap<String, Resource>>,
}

impl SnapshotBuilder {
    /// Adds one resource under `name`; a later insert with the same name replaces it.
    pub fn insert<M: Message + Name>(&mut self, type_url: TypeUrl, name: &str, msg: &M) {
        self.types
            .entry(type_url)
            .or_default()
            .insert(name.to_owned(), Resource::encode(msg));
    }

    /// Uses `resources`, shared with other snapshots, for `type_url`. Resources also inserted
    /// for that type are layered over them (and win over shared ones of the same name).
    pub fn share(&mut self, type_url: TypeUrl, resources: Arc<Resources>) {
        self.shared.insert(type_url, resources);
    }

    /// Computes every type's version and freezes the snapshot.
    pub fn seal(mut self) -> Snapshot {
        let mut types = BTreeMap::new();
        for type_url in TypeUrl::ALL {
            let own = self.types.remove(&type_url).unwrap_or_default();
            let shared = self.shared.remove(&type_url);
            let version = match &shared {
                Some(shared) if own.is_empty() => shared.version.clone(),
                // Versioned by the shared version plus the own items: no rehash of the shared
                // content.
                _ => {
                    let mut hasher = DefaultHasher::new();
                    if let Some(shared) = &shared {
                        shared.version.hash(&mut hasher);
                    }
                    hash_items(&own, &mut hasher);
                    version(&hasher)
                }
            };
            types.insert(
                type_url,
                Layers {
                    version,
                    shared,
                    own,
                },
            );
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

    fn names(snapshot: &Snapshot, type_url: TypeUrl) -> Vec<&str> {
        snapshot.iter(type_url).map(|(name, _)| name).collect()
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
        assert_eq!(
            a.get(TypeUrl::Cluster, "a"),
            c.get(TypeUrl::Cluster, "a"),
            "equal content, equal hash"
        );
        assert_ne!(
            a.get(TypeUrl::Cluster, "a").unwrap().hash,
            a.get(TypeUrl::Cluster, "b").unwrap().hash
        );
        let any = &a.get(TypeUrl::Cluster, "a").unwrap().any;
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.config.cluster.v3.Cluster"
        );
    }

    #[test]
    fn own_resources_layer_over_shared_ones() {
        let shared = Arc::new(Resources::new(
            ["a", "b"]
                .map(|n| (n.to_owned(), Resource::encode(&cluster(n))))
                .into(),
        ));
        let mut only_shared = Snapshot::builder();
        only_shared.share(TypeUrl::Cluster, shared.clone());
        let only_shared = only_shared.seal();
        assert_eq!(only_shared.version(TypeUrl::Cluster), shared.version);
        assert_eq!(names(&only_shared, TypeUrl::Cluster), ["a", "b"]);

        let mut layered = Snapshot::builder();
        layered.share(TypeUrl::Cluster, shared.clone());
        layered.insert(TypeUrl::Cluster, "local", &cluster("local"));
        let mut replacement = cluster("b");
        replacement.alt_stat_name = "own".to_owned();
        layered.insert(TypeUrl::Cluster, "b", &replacement);
        let layered = layered.seal();
        assert_eq!(layered.changes(TypeUrl::Cluster), None);
        assert_ne!(layered.version(TypeUrl::Cluster), shared.version);
        let mut listed = names(&layered, TypeUrl::Cluster);
        listed.sort_unstable();
        assert_eq!(listed, ["a", "b", "local"], "each name once");
        let b = layered.get(TypeUrl::Cluster, "b").unwrap();
        assert_eq!(
            Cluster::decode(b.any.value.as_slice()).unwrap(),
            replacement
        );
    }
}

#[cfg(test)]
mod change_tests {
    use super::*;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;

    fn resources(items: &[(&str, u32)]) -> BTreeMap<String, Resource> {
        items
            .iter()
            .map(|(name, weight)| {
                let cla = ClusterLoadAssignment {
                    cluster_name: (*name).to_owned(),
                    endpoints: vec![Default::default(); *weight as usize],
                    ..ClusterLoadAssignment::default()
                };
                ((*name).to_owned(), Resource::encode(&cla))
            })
            .collect()
    }

    #[test]
    fn changes_name_what_was_added_changed_or_removed() {
        let before = Resources::new(resources(&[("a", 1), ("b", 1), ("c", 1), ("e", 1)]));
        let after = Resources::following(
            resources(&[("b", 1), ("c", 2), ("d", 1), ("e", 1), ("f", 1)]),
            &before,
        );
        let changes = after.changes.clone().unwrap();
        assert_eq!(changes.since, before.version);
        assert_eq!(
            changes.names.iter().map(String::as_str).collect::<Vec<_>>(),
            ["a", "c", "d", "f"]
        );
        assert_eq!(after.version, Resources::new(after.items.clone()).version);
        let unchanged = Resources::following(after.items.clone(), &after);
        assert!(unchanged.changes.unwrap().names.is_empty());

        let mut b = Snapshot::builder();
        b.share(TypeUrl::ClusterLoadAssignment, Arc::new(after));
        let snapshot = b.seal();
        assert_eq!(
            snapshot.changes(TypeUrl::ClusterLoadAssignment),
            Some(&changes)
        );
        assert_eq!(snapshot.changes(TypeUrl::Cluster), None);
    }
}
