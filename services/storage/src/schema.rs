//! Table definitions shared by both backends (the migrations keep the SQL types
//! compatible: BIGINT ids and millisecond timestamps on both).

diesel::table! {
    images (id) {
        id -> BigInt,
        path -> Text,
        content_hash -> Text,
        status -> Text,
        attempts -> Integer,
        last_error -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        published_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    people (id) {
        id -> BigInt,
        name -> Nullable<Text>,
        created_at -> BigInt,
        hidden -> Bool,
        feature_face_id -> Nullable<BigInt>,
        merged_into -> Nullable<BigInt>,
        version -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    faces (id) {
        id -> BigInt,
        person_id -> Nullable<BigInt>,
        content_hash -> Nullable<Text>,
        embedding -> Nullable<Binary>,
        box_x -> Nullable<Float>,
        box_y -> Nullable<Float>,
        box_width -> Nullable<Float>,
        box_height -> Nullable<Float>,
        created_at -> BigInt,
        crop -> Nullable<Binary>,
        image_id -> Nullable<BigInt>,
        source -> Text,
        assigned -> Nullable<Text>,
        similarity -> Nullable<Float>,
        landmarks -> Nullable<Binary>,
        detection_score -> Nullable<Float>,
        quality -> Nullable<Float>,
        updated_at -> BigInt,
    }
}

diesel::table! {
    face_rejections (face_id, person_id) {
        face_id -> BigInt,
        person_id -> BigInt,
        created_at -> BigInt,
    }
}

diesel::table! {
    merges (id) {
        id -> BigInt,
        into_person_id -> BigInt,
        into_name -> Nullable<Text>,
        created_at -> BigInt,
        undone_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    merge_people (merge_id, person_id) {
        merge_id -> BigInt,
        person_id -> BigInt,
        name -> Nullable<Text>,
        hidden -> Bool,
        feature_face_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    merge_faces (merge_id, face_id) {
        merge_id -> BigInt,
        face_id -> BigInt,
        from_person_id -> BigInt,
        moved_at -> BigInt,
    }
}

diesel::table! {
    jobs (id) {
        id -> BigInt,
        kind -> Text,
        scope -> Text,
        state -> Text,
        done -> BigInt,
        total -> BigInt,
        error -> Nullable<Text>,
        owner -> Nullable<Text>,
        heartbeat_at -> Nullable<BigInt>,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    gallery_version (id) {
        id -> Integer,
        version -> BigInt,
    }
}

diesel::joinable!(faces -> images (image_id));
diesel::allow_tables_to_appear_in_same_query!(
    images,
    people,
    faces,
    face_rejections,
    merges,
    merge_people,
    merge_faces
);
