//! The work directory: jobs kept apart, flows cached and recomputed when damaged, and what a
//! frame is held to (the warped previous frame, long-term weights on what closer frames miss).

use super::*;
use crate::video::synthetic::Texture;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("impasto-work-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A pan: frame k is the texture shifted `k * 2` px right and `k` px down.
fn pan_frame(k: usize, w: usize, h: usize) -> Image {
    let t = Texture::new(7, 48);
    let mut data = vec![0.0; 3 * w * h];
    for y in 0..h {
        for x in 0..w {
            let g = t.at(x as f32 - 2.0 * k as f32, y as f32 - k as f32);
            for c in 0..3 {
                data[c * w * h + y * w + x] = (g + 20.0 * c as f32).clamp(0.0, 255.0);
            }
        }
    }
    // As a decoded frame is: 8-bit.
    let rgb: Vec<u8> =
        (0..w * h).flat_map(|i| (0..3).map(move |c| (c, i))).map(|(c, i)| data[c * w * h + i].round() as u8).collect();
    Image::from_rgb8(w, h, &rgb).unwrap()
}

fn work_with_frames(name: &str, frames: usize, (w, h): (usize, usize)) -> WorkDir {
    let work = WorkDir::open(&scratch(name), "job", 1).unwrap();
    for k in 1..=frames {
        pan_frame(k, w, h).save(work.frame(k)).unwrap();
    }
    work
}

#[test]
fn settings_name_the_field_at_fault() {
    VideoSettings::default().validate().unwrap();
    let bad = |v: VideoSettings| match v.validate() {
        Err(Error::Setting { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let d = VideoSettings::default;
    assert_eq!(bad(VideoSettings { temporal_weight: -1.0, ..d() }), "video.temporal_weight");
    assert_eq!(bad(VideoSettings { temporal_weight: f64::NAN, ..d() }), "video.temporal_weight");
    assert_eq!(bad(VideoSettings { temporal_frames: vec![], ..d() }), "video.temporal_frames");
    assert_eq!(bad(VideoSettings { temporal_frames: vec![0], ..d() }), "video.temporal_frames");
    assert_eq!(bad(VideoSettings { temporal_frames: vec![1, 33], ..d() }), "video.temporal_frames");
    assert_eq!(bad(VideoSettings { temporal_frames: vec![2, 1, 2], ..d() }), "video.temporal_frames");
    assert_eq!(bad(VideoSettings { frame_iterations: 0, ..d() }), "video.frame_iterations");
    assert_eq!(bad(VideoSettings { passes: 0, ..d() }), "video.passes");
    assert_eq!(bad(VideoSettings { passes: 33, ..d() }), "video.passes");
}

#[test]
fn a_work_directory_belongs_to_one_job() {
    let root = scratch("job");
    WorkDir::open(&root, "{\"size\":64}", 1).unwrap();
    WorkDir::open(&root, "{\"size\":64}", 5).unwrap();
    let err = WorkDir::open(&root, "{\"size\":96}", 1).unwrap_err().to_string();
    assert!(err.contains("other settings") && err.contains(&root.display().to_string()), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn flows_are_cached_and_a_damaged_cache_is_computed_afresh() {
    let work = work_with_frames("flows", 2, (37, 23));
    let settings = FlowSettings::default();
    let flow = work.flow(2, 1, &settings).unwrap();
    let file = work.root.join("flows/000002-000001.flow");
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.len(), 16 + 8 * 37 * 23);
    assert_eq!(read_flow(&bytes, 37, 23).as_ref(), Some(&flow));
    // The pan moves the content 2 px right, 1 down: frame 2 at x is frame 1 at x - (2, 1).
    let inner: Vec<bool> = (0..37 * 23).map(|i| (6..31).contains(&(i % 37)) && (6..17).contains(&(i / 37))).collect();
    let truth = Flow::from_fn(37, 23, |_, _| (-2.0, -1.0));
    assert!(flow.end_point_error(&truth, Some(&inner)) < 0.25);
    // A cache file that was read from disk is the one used...
    let mut doctored = flow.clone();
    doctored.u[0] = 99.0;
    std::fs::write(&file, flow_bytes(&doctored)).unwrap();
    assert_eq!(work.flow(2, 1, &settings).unwrap(), doctored);
    // ...and a damaged one (truncated, another size, not a number, not a flow) is replaced.
    let mut nan = flow_bytes(&flow);
    nan[20..24].copy_from_slice(&f32::NAN.to_le_bytes());
    let other = flow_bytes(&Flow::zero(23, 37));
    for damaged in [&bytes[..bytes.len() - 4], &other[..], &nan[..], b"not a flow"] {
        std::fs::write(&file, damaged).unwrap();
        assert_eq!(work.flow(2, 1, &settings).unwrap(), flow);
        assert_eq!(std::fs::read(&file).unwrap(), bytes);
    }
    std::fs::remove_dir_all(&work.root).unwrap();
}

#[test]
fn a_frame_is_held_to_the_warped_previous_one_and_far_frames_to_what_it_misses() {
    let (w, h) = (40, 30);
    let work = work_with_frames("hold", 4, (w, h));
    // Painted frames: the frames themselves, so a good warp gives the frame back.
    for k in 1..=4 {
        work.save_painted(k, &pan_frame(k, w, h)).unwrap();
    }
    let flow = FlowSettings::default();
    let video = VideoSettings { temporal_frames: vec![2, 1], ..VideoSettings::default() };
    assert!(work.hold(1, &video, &flow).unwrap().is_none());
    // Frame 2 of a shot from 1 reaches frame 1 only; frame 4 reaches 3 and 2.
    assert_eq!(work.hold(2, &video, &flow).unwrap().unwrap().targets.len(), 1);
    let held = work.hold(4, &video, &flow).unwrap().unwrap();
    assert_eq!(held.targets.len(), 2);
    let backward = work.flow(4, 3, &flow).unwrap();
    let (expected, _) = warp(&image_io::load(work.painted(3)).unwrap(), &backward);
    assert_eq!(held.start, expected, "the start is the previous frame warped");
    let c1 = reliability(&backward, &work.flow(3, 4, &flow).unwrap());
    let c2 = reliability(&work.flow(4, 2, &flow).unwrap(), &work.flow(2, 4, &flow).unwrap());
    // The closest frame's term holds its reliable pixels; the far one's only what it misses.
    let (near, far) = (&held.targets[0], &held.targets[1]);
    assert_eq!(near.reliability(), &c1[..]);
    let expected_far: Vec<f32> = c2.iter().zip(&c1).map(|(a, b)| (a - b).max(0.0)).collect();
    assert_eq!(far.reliability(), &expected_far[..]);
    // The pan brings in a band on the left and top: unreliable for frame 3, more so for 2.
    let reliable = |c: &[f32]| c.iter().sum::<f32>();
    assert!(
        reliable(&c1) > reliable(&c2) && reliable(&c2) > 0.5 * (w * h) as f32,
        "{} {}",
        reliable(&c1),
        reliable(&c2)
    );
    // Where the flow is reliable, the warped previous frame is the frame (8-bit, bilinear).
    let frame = pan_frame(4, w, h);
    let n = w * h;
    let err: f32 = (0..n)
        .filter(|&i| c1[i] > 0.0)
        .map(|i| (0..3).map(|c| (held.start.data[c * n + i] - frame.data[c * n + i]).abs()).sum::<f32>())
        .sum::<f32>()
        / (3.0 * reliable(&c1));
    assert!(err < 4.0, "mean difference {err}");
    // With no temporal weight every frame is painted on its own.
    assert!(work.hold(4, &VideoSettings { temporal_weight: 0.0, ..video.clone() }, &flow).unwrap().is_none());
    // A shot from frame 3 has its own painted frames: its first starts afresh, the next one is
    // held to the shot's frame 3, not to the one the shot from 1 painted.
    let shot = WorkDir::open(&work.root, "job", 3).unwrap();
    assert_ne!(shot.painted(3), work.painted(3));
    assert!(shot.hold(3, &video, &flow).unwrap().is_none(), "a shot's first frame starts afresh");
    assert_eq!(shot.first_unpainted(&video.steps(3, 4), 4), Some(0), "frame 3 of the shot from 3 is not painted");
    assert_eq!(work.first_unpainted(&VideoSettings::default().steps(1, 4), 4), None);
    let err = shot.hold(4, &video, &flow).unwrap_err().to_string();
    assert!(err.contains(&shot.painted(3).display().to_string()), "{err}");
    std::fs::remove_dir_all(&work.root).unwrap();
}

#[test]
fn overlapping_shots_are_cross_faded_and_a_gap_is_named() {
    let root = scratch("join");
    let (w, h) = (5, 4);
    let flat = |v: f32| Image::filled(w, h, v);
    // A shot from frame 1 painted 1..4 (value 0) and one from 3 painted 3..6 (value 120).
    let one = WorkDir::open(&root, "job", 1).unwrap();
    let three = WorkDir::open(&root, "job", 3).unwrap();
    (1..=4).for_each(|k| one.save_painted(k, &flat(0.0)).unwrap());
    (3..=6).for_each(|k| three.save_painted(k, &flat(120.0)).unwrap());
    // A shot within the first adds nothing.
    let two = WorkDir::open(&root, "job", 2).unwrap();
    (2..=3).for_each(|k| two.save_painted(k, &flat(250.0)).unwrap());
    // A shot from 8 with a gap after its first frame covers 8 only.
    let eight = WorkDir::open(&root, "job", 8).unwrap();
    eight.save_painted(8, &flat(30.0)).unwrap();
    eight.save_painted(10, &flat(30.0)).unwrap();
    assert_eq!(one.shots(), vec![(1, 4), (2, 3), (3, 6), (8, 8)]);
    let value = |k: usize| one.joined(k).unwrap().data[0];
    // The overlap is frames 3 and 4: the later shot's share 1/3, then 2/3.
    let expected = [0.0, 0.0, 40.0, 80.0, 120.0, 120.0];
    for (k, e) in (1..=6).zip(expected) {
        assert!((value(k) - e).abs() < 0.01, "frame {k}: {} not {e}", value(k));
    }
    assert_eq!(value(8), 30.0);
    for gap in [7, 9, 11] {
        let err = one.joined(gap).unwrap_err().to_string();
        assert!(err.contains(&format!("frame {gap} is in no painted shot")), "{err}");
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn later_passes_alternate_and_blend_the_warped_neighbour_into_the_last_pass() {
    let video = VideoSettings { passes: 3, ..VideoSettings::default() };
    let steps = video.steps(4, 6);
    assert_eq!(steps, vec![(1, 4), (1, 5), (1, 6), (2, 6), (2, 5), (2, 4), (3, 4), (3, 5), (3, 6)]);
    let (w, h) = (40, 30);
    let work = work_with_frames("passes", 4, (w, h));
    for k in 1..=4 {
        work.save_painted(k, &pan_frame(k, w, h)).unwrap();
    }
    let two = work.pass(2, 4);
    assert!(two.painted_dir().ends_with("painted-pass2-to-000004"));
    let other_end = WorkDir::open(&work.root, "job", 3).unwrap().pass(2, 9);
    assert!(other_end.painted_dir().ends_with("painted-000003-pass2-to-000009"));
    assert_ne!(work.pass(2, 5).painted_dir(), two.painted_dir(), "a later pass depends on where the shot ends");
    // Pass 2 runs backward: frame 4 first (no neighbour), then 3 next to the new 4.
    let flow = FlowSettings::default();
    let first = two.hold_in_pass(4, None, &video, &flow).unwrap();
    assert_eq!(first.start, image_io::load(work.painted(4)).unwrap());
    assert!(first.targets.is_empty());
    let mut new_four = pan_frame(4, w, h);
    new_four.data.iter_mut().for_each(|x| *x = (*x + 40.0).min(255.0));
    two.save_painted(4, &new_four).unwrap();
    let held = two.hold_in_pass(3, Some(4), &video, &flow).unwrap();
    let (backward, forward) = (work.flow(3, 4, &flow).unwrap(), work.flow(4, 3, &flow).unwrap());
    let c = reliability(&backward, &forward);
    let (warped, _) = warp(&image_io::load(two.painted(4)).unwrap(), &backward);
    let before = image_io::load(work.painted(3)).unwrap();
    let n = w * h;
    for i in 0..3 * n {
        let expected = before.data[i] + 0.5 * c[i % n] * (warped.data[i] - before.data[i]);
        assert!((held.start.data[i] - expected).abs() < 1e-4, "pixel {i}");
    }
    assert!(c.iter().sum::<f32>() > 0.5 * n as f32);
    assert_eq!(held.targets.len(), 1);
    assert_eq!(held.targets[0].reliability(), &c[..]);
    assert_eq!(held.targets[0].warped(), &warped);
    // Each pass has its own shots.
    assert_eq!(work.shots(), vec![(1, 4)]);
    assert!(two.shots().is_empty(), "pass 2 has frame 4 only, not from the shot's first frame");
    std::fs::remove_dir_all(&work.root).unwrap();
}
