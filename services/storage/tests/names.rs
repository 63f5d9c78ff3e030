//! Lookups by name normalise the name as it is normalised when given, on both backends.

use facewire_storage::{both_backends, names::normalize_name, Store};

async fn lookups_normalise(store: Store) {
    let (john, _) = store
        .person_for_name(&normalize_name("John").unwrap())
        .await
        .unwrap();
    for typed in ["John", "John ", "  John", "Ｊｏｈｎ"] {
        let found = store.person_by_name(typed).await.unwrap();
        assert_eq!(
            found.map(|p| p.id),
            Some(john),
            "{typed:?} did not find John"
        );
    }
    // A look-alike with a Cyrillic о is not John (and could never be given as a name).
    assert!(store.person_by_name("J\u{43e}hn").await.unwrap().is_none());

    // A name stored before normalisation (two inner spaces) is still found as stored,
    // and its normalised form finds it only if nobody holds that form.
    let (old, _) = store.person_for_name("Ada  Lovelace").await.unwrap();
    let found = store.person_by_name("Ada  Lovelace").await.unwrap();
    assert_eq!(found.map(|p| p.id), Some(old));
    let (new, _) = store.person_for_name("Ada Lovelace").await.unwrap();
    let found = store.person_by_name("Ada  Lovelace ").await.unwrap();
    assert_eq!(
        found.map(|p| p.id),
        Some(new),
        "the normalised name comes first"
    );
}

both_backends!(names, lookups_normalise);
