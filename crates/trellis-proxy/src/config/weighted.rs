//! Weighted choice among a route's (or TCP proxy's) clusters: the cluster stage's first step.

use rand::Rng;

use super::FieldError;

/// Items with integer weights; [`Weighted::pick`] returns each with probability weight / total.
#[derive(Debug)]
pub(crate) struct Weighted<T> {
    /// Items with the running sum of weights up to and including each.
    entries: Vec<(u64, T)>,
    total: u64,
}

impl<T> Weighted<T> {
    /// Builds the choice; at least one weight must be positive.
    pub(crate) fn new(items: Vec<(u32, T)>) -> Result<Self, FieldError> {
        let mut total = 0u64;
        let entries: Vec<(u64, T)> = items
            .into_iter()
            .map(|(w, item)| {
                total += u64::from(w);
                (total, item)
            })
            .collect();
        if total == 0 {
            return Err(FieldError::message(
                "weights must include at least one positive weight",
            ));
        }
        Ok(Self { entries, total })
    }

    /// A single item with all the weight.
    pub(crate) fn single(item: T) -> Self {
        Self {
            entries: vec![(1, item)],
            total: 1,
        }
    }

    /// Picks an item at random, proportionally to the weights.
    pub(crate) fn pick(&self) -> &T {
        if let [(_, only)] = self.entries.as_slice() {
            return only;
        }
        self.pick_at(rand::rng().random_range(0..self.total))
    }

    /// The item whose weight range contains `point` (`0 <= point < total`).
    fn pick_at(&self, point: u64) -> &T {
        let i = self.entries.partition_point(|(upto, _)| *upto <= point);
        // `point < total` and the last running sum is `total`, so `i` is in range; the `min` keeps
        // an out-of-range point on the last item instead of panicking.
        &self.entries[i.min(self.entries.len() - 1)].1
    }

    /// Every item with its own weight, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        let mut prev = 0;
        self.entries.iter().map(move |(upto, item)| {
            let w = upto - prev;
            prev = *upto;
            (w, item)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ninety_ten_split_over_2000_picks() {
        let w = Weighted::new(vec![(90, "a"), (10, "b")]).unwrap();
        let b = (0..2000).filter(|_| *w.pick() == "b").count();
        let share = b as f64 / 2000.0;
        assert!((0.07..=0.13).contains(&share), "b got {share}");
    }

    #[test]
    fn zero_weights_are_never_picked() {
        let w = Weighted::new(vec![(0, "a"), (5, "b"), (0, "c")]).unwrap();
        assert!((0..5).all(|p| *w.pick_at(p) == "b"));
        assert!(Weighted::new(vec![(0, "a")]).is_err());
        let listed: Vec<_> = w.iter().map(|(w, i)| (w, *i)).collect();
        assert_eq!(listed, vec![(0, "a"), (5, "b"), (0, "c")]);
    }
}
