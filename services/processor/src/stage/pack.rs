//! Stage 5: group files into recognition calls bounded by count and by bytes, so that
//! large photos never make a request recognition refuses.

/// Splits images of `sizes` (in order) into calls of consecutive images: at most
/// `max_images` each and at most `max_bytes` of images (with their framing) each; an image
/// larger than `max_bytes` goes alone. Returns the indexes of each call's images.
pub fn pack_calls(sizes: &[u64], max_images: usize, max_bytes: usize) -> Vec<Vec<usize>> {
    let mut calls: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut bytes = 0usize;
    for (k, &size) in sizes.iter().enumerate() {
        let cost = (size as usize).saturating_add(facewire_config::BATCH_IMAGE_OVERHEAD_BYTES);
        if !current.is_empty()
            && (current.len() >= max_images.max(1) || bytes.saturating_add(cost) > max_bytes)
        {
            calls.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(k);
        bytes = bytes.saturating_add(cost);
    }
    if !current.is_empty() {
        calls.push(current);
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_bounded_by_bytes_and_by_count() {
        const MB: u64 = 1_000_000;
        // Eight phone photos and a small one, 16 MB a call: large ones go alone or in
        // pairs that fit, never eight at once.
        let sizes = [
            12 * MB,
            3 * MB,
            10 * MB,
            14 * MB,
            9_000,
            11 * MB,
            13 * MB,
            20 * MB,
            2 * MB,
        ];
        let calls = pack_calls(&sizes, 8, 16 * MB as usize);
        let bytes = |call: &Vec<usize>| call.iter().map(|&k| sizes[k]).sum::<u64>();
        for call in &calls {
            assert!(call.len() == 1 || bytes(call) <= 16 * MB, "{calls:?}");
        }
        assert_eq!(calls.concat(), (0..sizes.len()).collect::<Vec<_>>());
        assert_eq!(
            calls,
            vec![
                vec![0, 1],
                vec![2],
                vec![3, 4],
                vec![5],
                vec![6],
                vec![7],
                vec![8]
            ]
        );
        // Small images: the count bounds the call.
        let calls = pack_calls(&[1_000; 20], 8, 16 * MB as usize);
        assert_eq!(
            calls.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![8, 8, 4]
        );
        assert!(pack_calls(&[], 8, 1).is_empty());
    }
}
