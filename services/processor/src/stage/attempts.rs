//! Stage 3: an image claimed past the attempt limit is not tried again: it ends `failed`
//! and its message is dead-lettered (see [`crate::stage::settle`]).

use facewire_storage::images::Claim;

/// Splits claimed images into those past `max_attempts` (first) and those to try.
#[allow(clippy::type_complexity)]
pub fn split_exhausted<T>(
    active: Vec<(T, Claim)>,
    max_attempts: i32,
) -> (Vec<(T, Claim)>, Vec<(T, Claim)>) {
    active
        .into_iter()
        .partition(|(_, claim)| claim.attempt > max_attempts)
}

/// The reason recorded for an image given up on, keeping its last error.
pub fn give_up_reason(max_attempts: i32, last_error: Option<&str>) -> String {
    format!(
        "gave up after {max_attempts} attempts: {}",
        last_error.unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(attempt: i32) -> Claim {
        Claim {
            id: attempt.into(),
            path: String::new(),
            attempt,
            created_at: 0,
            content_hash: String::new(),
        }
    }

    #[test]
    fn only_attempts_beyond_the_limit_are_exhausted() {
        let active = (1..=5).map(|a| (a, claim(a))).collect();
        let (exhausted, tried) = split_exhausted(active, 3);
        assert_eq!(
            exhausted.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert_eq!(
            tried.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn the_reason_keeps_the_last_error() {
        assert_eq!(
            give_up_reason(8, Some("recognition unavailable: connection refused")),
            "gave up after 8 attempts: recognition unavailable: connection refused"
        );
        assert_eq!(give_up_reason(2, None), "gave up after 2 attempts: ");
    }
}
