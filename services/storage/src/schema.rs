//! Table definitions shared by both backends (the migrations keep the SQL types
//! compatible: BIGINT ids and millisecond timestamps on both).

diesel::table! {
    images (id) {
        id -> BigInt,
        path -> Text,
        content_hash -> Text,
        status -> Text,
        people -> Text,
        attempts -> Integer,
        last_error -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

// ---- gallery tables (recognition) below ----

diesel::table! {
    people (id) {
        id -> BigInt,
        name -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    faces (id) {
        id -> BigInt,
        person_id -> BigInt,
        content_hash -> Text,
        embedding -> Binary,
        box_x -> Float,
        box_y -> Float,
        box_width -> Float,
        box_height -> Float,
        created_at -> BigInt,
        crop -> Nullable<Binary>,
    }
}

diesel::table! {
    gallery_version (id) {
        id -> Integer,
        version -> BigInt,
    }
}

diesel::joinable!(faces -> people (person_id));
diesel::allow_tables_to_appear_in_same_query!(people, faces);
