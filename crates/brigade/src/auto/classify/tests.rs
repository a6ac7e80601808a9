use super::*;

const MS: u64 = 1_000_000;
const US: u64 = 1_000;

fn cpu(ms: u64) -> Sample {
    Sample {
        wall_ns: ms * MS,
        cpu_ns: ms * MS,
        involuntary: 0,
        ..Sample::default()
    }
}

fn sleeps(ms: u64) -> Sample {
    Sample {
        wall_ns: ms * MS,
        cpu_ns: 20 * US,
        voluntary: 1,
        ..Sample::default()
    }
}

/// A CPU-bound call on a busy machine: half of its wall time it waited for a core.
fn preempted(ms: u64) -> Sample {
    Sample {
        wall_ns: 2 * ms * MS,
        cpu_ns: ms * MS,
        runq_ns: 0, // unknown here: no voluntary switch says it anyway
        involuntary: 5,
        ..Sample::default()
    }
}

fn tiny() -> Sample {
    Sample {
        wall_ns: 300,
        cpu_ns: 300,
        ..Sample::default()
    }
}

#[test]
fn a_sample_splits_into_cpu_blocked_and_waiting_for_a_core() {
    let s = Sample {
        wall_ns: 10 * MS,
        cpu_ns: 2 * MS,
        runq_ns: 3 * MS,
        voluntary: 1,
        involuntary: 1,
    };
    let split = s.split(SHORT_CALL_NS);
    assert_eq!(split.own_ns, 7 * MS);
    assert_eq!(split.blocked_ns, 5 * MS);
    assert_eq!(split.reading, Reading::Waits);

    // No voluntary switch: the thread never slept, whatever the clocks say.
    let split = preempted(4).split(SHORT_CALL_NS);
    assert_eq!((split.own_ns, split.blocked_ns), (4 * MS, 0));
    assert_eq!(split.reading, Reading::Cpu);

    assert_eq!(tiny().split(SHORT_CALL_NS).reading, Reading::Short);
    // CPU time read a hair after the wall clock does not make blocked time negative.
    let over = Sample {
        wall_ns: MS,
        cpu_ns: MS + 500,
        voluntary: 1,
        ..Sample::default()
    };
    assert_eq!(over.split(SHORT_CALL_NS).blocked_ns, 0);
}

fn feed(calls: &mut Calls, sample: Sample, n: usize) -> Vec<Decision> {
    (0..n).filter_map(|_| calls.observe(&sample)).collect()
}

#[test]
fn a_new_site_is_placed_after_min_samples() {
    let mut c = Calls::default();
    let moves = feed(&mut c, cpu(1), MIN_SAMPLES as usize);
    assert_eq!(moves.len(), 1);
    assert_eq!(moves[0].from, None);
    assert_eq!(moves[0].to, Lane::Compute);
    assert!(moves[0].why.waiting < 0.01);

    let mut c = Calls::default();
    assert_eq!(feed(&mut c, sleeps(20), 3), []);
    assert_eq!(c.lane(), None);
    let moves = feed(&mut c, sleeps(20), 1);
    assert_eq!(moves[0].to, Lane::Blocking);
    assert!(moves[0].why.waiting > 0.99);
    assert!(
        moves[0].why.to_string().contains("blocked"),
        "{}",
        moves[0].why
    );
}

#[test]
fn tiny_and_preempted_calls_stay_on_the_compute_lane() {
    let mut c = Calls::default();
    assert_eq!(feed(&mut c, tiny(), 100).len(), 1);
    assert_eq!(c.lane(), Some(Lane::Compute));
    let mut c = Calls::default();
    feed(&mut c, preempted(3), 100);
    assert_eq!(c.lane(), Some(Lane::Compute));
    // Short waits (a quick cached read) are not worth a move either.
    let quick_wait = Sample {
        wall_ns: 20 * US,
        cpu_ns: US,
        voluntary: 1,
        ..Sample::default()
    };
    let mut c = Calls::default();
    feed(&mut c, quick_wait, 100);
    assert_eq!(c.lane(), Some(Lane::Compute));
}

#[test]
fn a_site_that_starts_blocking_moves_quickly_and_moves_back_only_when_stable() {
    let mut c = Calls::default();
    feed(&mut c, cpu(1), 20);
    assert_eq!(c.lane(), Some(Lane::Compute));
    // Out: within a handful of samples.
    let moves = feed(&mut c, sleeps(10), MOVE_AFTER as usize + 1);
    assert_eq!(moves.len(), 1);
    assert_eq!(moves[0].from, Some(Lane::Compute));
    assert_eq!(moves[0].to, Lane::Blocking);
    // A mixed reading does not bring it back…
    for _ in 0..50 {
        assert_eq!(c.observe(&cpu(1)), None);
        assert_eq!(c.observe(&sleeps(10)), None);
    }
    // …a stable one does, after the streak.
    let back = feed(&mut c, cpu(1), 40);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].to, Lane::Compute);
    assert!(c.samples() > 100);
}

#[test]
fn one_outlier_does_not_move_a_site() {
    let mut c = Calls::default();
    feed(&mut c, cpu(2), 30);
    assert_eq!(c.observe(&sleeps(5)), None);
    assert_eq!(feed(&mut c, cpu(2), 30), []);
    assert_eq!(c.lane(), Some(Lane::Compute));
}

fn long_cpu_poll(ms: u64) -> Sample {
    cpu(ms)
}

#[test]
fn futures_with_long_cpu_polls_go_to_the_compute_lane_and_blocking_ones_to_the_blocking_lane() {
    let mut p = Polls::default();
    let moves: Vec<_> = (0..4).filter_map(|_| p.probed(&long_cpu_poll(5))).collect();
    assert_eq!(moves.len(), 1);
    assert_eq!(moves[0].to, Lane::Compute);
    assert_eq!(moves[0].from, Some(Lane::Loop));

    let mut p = Polls::default();
    let moves: Vec<_> = (0..4).filter_map(|_| p.probed(&sleeps(50))).collect();
    assert_eq!(moves.len(), 1);
    assert_eq!(moves[0].to, Lane::Blocking);
    assert!(moves[0].why.to_string().contains("polls long"));
}

#[test]
fn a_burst_of_slow_first_polls_among_quick_ones_is_not_a_reason_to_move() {
    // 1,000 connections: each a few quick polls; a handful of first polls took 10 ms of
    // CPU time while a thousand sockets opened at once.
    let mut p = Polls::default();
    for task in 0..1000 {
        if task % 100 == 0 {
            assert_eq!(p.probed(&long_cpu_poll(10)), None);
        }
        assert_eq!(p.short(5, 5 * 30 * US), None);
    }
    assert_eq!(p.lane(), Lane::Loop);
    // The burst measured: 7 % of polls long, 8 ms each, asleep in the kernel (locks the
    // loop's own threads held), among 26 µs ones; and the long ones clustered at first.
    let contended = Sample {
        wall_ns: 8 * MS,
        cpu_ns: 150 * US,
        voluntary: 3,
        ..Sample::default()
    };
    let mut p = Polls::default();
    for i in 0..5000 {
        let long = if i < 500 { i % 10 == 0 } else { i % 20 == 0 };
        if long {
            assert_eq!(p.probed(&contended), None, "moved at poll {i}");
        } else {
            assert_eq!(p.short(1, 26 * US), None);
        }
    }
    assert_eq!(p.lane(), Lane::Loop);
    // Even when two slow polls come first, in a row.
    let mut p2 = Polls::default();
    for _ in 0..2 {
        assert_eq!(p2.probed(&long_cpu_poll(12)), None);
    }
    for _ in 0..200 {
        assert_eq!(p2.short(5, 100 * US), None);
    }
    assert_eq!(p2.lane(), Lane::Loop);
}

#[test]
fn unprobed_long_polls_count_towards_the_share_but_the_kind_needs_probes() {
    let mut p = Polls::default();
    for _ in 0..10 {
        assert_eq!(p.long(20 * MS), None);
    }
    assert!(p.long_share() > 0.2);
    let moved = (0..4).filter_map(|_| p.probed(&sleeps(20))).last();
    assert_eq!(moved.map(|d| d.to), Some(Lane::Blocking));
}

#[test]
fn a_future_whose_polls_turn_short_returns_to_the_loop() {
    let mut p = Polls::default();
    for _ in 0..5 {
        p.probed(&long_cpu_poll(3));
    }
    assert_eq!(p.lane(), Lane::Compute);
    let mut back = None;
    for _ in 0..200 {
        if let Some(d) = p.short(1, 20 * US) {
            back = Some(d);
            break;
        }
    }
    let back = back.expect("moves back");
    assert_eq!(back.to, Lane::Loop);
    assert_eq!(back.from, Some(Lane::Compute));
}

#[test]
fn an_off_loop_site_changes_kind_when_its_long_polls_do() {
    let mut p = Polls::default();
    for _ in 0..5 {
        p.probed(&long_cpu_poll(3));
    }
    assert_eq!(p.lane(), Lane::Compute);
    let moved: Vec<_> = (0..30).filter_map(|_| p.probed(&sleeps(10))).collect();
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].to, Lane::Blocking);
}
