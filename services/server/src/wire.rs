//! Storage values on the wire, shared by every service that returns them (images from
//! the receiver, faces and people from recognition).

use facewire_proto::v1 as pb;
use facewire_storage::Assigned;

/// Milliseconds since the epoch as a protobuf timestamp.
pub fn timestamp(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// How a face got its person (`None`: it has none).
pub fn assigned_to_pb(a: Option<Assigned>) -> pb::FaceAssignment {
    match a {
        None => pb::FaceAssignment::Unspecified,
        Some(Assigned::Enrolled) => pb::FaceAssignment::Enrolled,
        Some(Assigned::Auto) => pb::FaceAssignment::Auto,
        Some(Assigned::Manual) => pb::FaceAssignment::Manual,
    }
}

/// A left/top/width/height face box.
pub fn bbox_to_pb(b: [f32; 4]) -> pb::BoundingBox {
    pb::BoundingBox {
        x: b[0],
        y: b[1],
        width: b[2],
        height: b[3],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_handle_millis() {
        let t = timestamp(1_700_000_000_123);
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 123_000_000));
        let before = timestamp(-1);
        assert_eq!((before.seconds, before.nanos), (-1, 999_000_000));
    }
}
