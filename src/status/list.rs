//! [`List`]: a status list (conditions, pipeline phases, events) held once however many
//! statuses hold an equal one.
//!
//! After a pass most requests of a Promise have the same conditions, the same pipeline phases
//! and the same events, down to their times (a cold pass at 10,000 requests spans a few
//! seconds). Each status kept its own vectors: about 600 bytes a request, 6 MB at 10,000
//! (docs/benchmarks.md, "Memory", seventh round). A `List` is an `Arc<Vec<T>>`: reading goes
//! through `Deref`; writing through `DerefMut` copies the vector first when another status
//! holds it (`Arc::make_mut`), so no status sees another's change. [`List::share`] replaces
//! the vector by an equal one from a process-wide table (one table per element type), as
//! [`super::Text`] does for strings ([`super::intern::Table`]).

use std::hash::Hash;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::intern::Table;

/// A list kept in a [`Table`]: its element type names its table.
pub trait Shareable: Clone + Eq + Hash + Send + Sync + 'static {
    /// The process's table of lists of this element type.
    fn table() -> &'static Mutex<Table<Vec<Self>>>;
}

/// Defines the table of one element type.
macro_rules! shareable {
    ($t:ty) => {
        impl Shareable for $t {
            fn table() -> &'static Mutex<Table<Vec<Self>>> {
                static TABLE: LazyLock<Mutex<Table<Vec<$t>>>> = LazyLock::new(Mutex::default);
                &TABLE
            }
        }
    };
}

shareable!(super::Condition);
shareable!(super::PipelineStatus);
shareable!(super::Event);

/// A shared status list (see the module docs); serialised as the plain list.
#[derive(Clone, PartialEq, Eq)]
pub struct List<T>(Arc<Vec<T>>);

impl<T: Shareable> List<T> {
    /// An empty list.
    pub fn new() -> Self {
        List(Arc::new(Vec::new()))
    }

    /// Makes this list the shared one: the table's equal list, or this one (without spare
    /// room) entered in the table.
    pub fn share(&mut self) {
        let own = &self.0;
        let shared = T::table()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .intern(own, || match own.capacity() > own.len() {
                true => Arc::new(own.as_slice().to_vec()),
                false => own.clone(),
            });
        self.0 = shared;
    }
}

impl<T: Shareable> List<T> {
    /// [`List::share`], first applying `f` to each element when no other status holds this
    /// list (a list read back from `state.json`, whose texts are not shared yet).
    pub fn share_each(&mut self, f: impl FnMut(&mut T)) {
        if let Some(v) = Arc::get_mut(&mut self.0) {
            v.iter_mut().for_each(f);
        }
        self.share();
    }
}

impl<T: Shareable> Default for List<T> {
    fn default() -> Self {
        List::new()
    }
}

impl<T> std::ops::Deref for List<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.0
    }
}

impl<T: Clone> std::ops::DerefMut for List<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        Arc::make_mut(&mut self.0)
    }
}

impl<T> From<Vec<T>> for List<T> {
    fn from(v: Vec<T>) -> Self {
        List(Arc::new(v))
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for List<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl<T: Serialize> Serialize for List<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// Read back unshared: [`crate::status::ObjectStatus::share_texts`] shares it.
impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<T>::deserialize(d).map(List::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Event, EventType};

    fn event(message: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: "ReconcileStarted".into(),
            message: message.into(),
            time: "2026-12-06T17:04:04Z".into(),
        }
    }

    #[test]
    fn equal_lists_share_one_vector_and_a_write_copies_it() {
        let mut a: List<Event> = vec![event("list test one")].into();
        let mut b: List<Event> = Vec::with_capacity(8).into();
        b.push(event("list test one"));
        a.share();
        b.share();
        assert!(Arc::ptr_eq(&a.0, &b.0), "equal lists share after share()");
        assert_eq!(b.capacity(), 1, "the shared list has no spare room");

        b.push(event("list test two"));
        assert_eq!(
            a.len(),
            1,
            "a write to one holder leaves the other's list as it was"
        );
        assert_eq!(b.len(), 2);
        assert!(!Arc::ptr_eq(&a.0, &b.0));

        let mut c: List<Event> = vec![event("list test one"), event("list test two")].into();
        c.share();
        b.share();
        assert!(Arc::ptr_eq(&b.0, &c.0));
        assert_eq!(b, c);
        assert_ne!(a, c);
    }

    #[test]
    fn serialises_as_the_plain_list() {
        let l: List<Event> = vec![event("list test serde")].into();
        let text = serde_json::to_string(&l).unwrap();
        assert_eq!(
            text,
            serde_json::to_string(&vec![event("list test serde")]).unwrap()
        );
        let back: List<Event> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, l);
        assert_eq!(serde_json::to_string(&List::<Event>::new()).unwrap(), "[]");
    }

    #[test]
    fn the_table_forgets_lists_no_status_holds() {
        // Enough distinct lists to pass a sweep; only the last ones are still held.
        let mut kept = Vec::new();
        for i in 0..3000 {
            let mut l: List<Event> = vec![event(&format!("list test sweep {i}"))].into();
            l.share();
            if i >= 2990 {
                kept.push(l);
            }
        }
        let t = Event::table().lock().unwrap();
        let live = t
            .set
            .iter()
            .filter(|l| l[0].message.starts_with("list test sweep"))
            .count();
        assert!(live < 3000, "dropped lists are swept: {live} left");
        for l in &kept {
            assert!(t.set.contains(&l.0), "a held list stays in the table");
        }
    }
}
