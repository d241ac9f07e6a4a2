"""Every detector fires on a constructed metric stream, and stays silent on healthy ones."""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
import pytest

from sb3_safe.health import CODES, HealthHistory, Thresholds, detect, gain_lost, scan, trimmed_mean
from sb3_safe.health.returns import return_noise


def healthy_row(i: int, **changes: float) -> dict[str, float]:
    row: dict[str, Any] = {
        "timesteps": 2048.0 * (i + 1),
        "approx_kl": 0.01,
        "clip_fraction": 0.1,
        "entropy_loss": -1.4 + 0.005 * i,
        "std": 1.0 - 0.005 * i,
        "value_loss": 0.5,
        "explained_variance": 0.8,
        "returns_std": 30.0,
        "ep_rew_mean": -1200.0 + 20.0 * i,
        "loss": 0.2,
        "policy_gradient_loss": -0.01,
        "actor_grad_norm": 0.3,
        "critic_grad_norm": 2.0,
        "skipped_updates": 0.0,
        "params_finite": 1.0,
    }
    row.update(changes)
    return row


def healthy(n: int = 40) -> list[dict[str, float]]:
    return [healthy_row(i) for i in range(n)]


def codes(history: list[dict[str, float]], **kwargs: Any) -> list[str]:
    return [f.code for f in detect(history, **kwargs)]


def test_healthy_stream_raises_nothing():
    history = healthy()
    assert scan(history, target_kl=0.015) == []


def test_solved_task_with_flat_returns_raises_nothing_critical():
    # A solved CartPole: every episode 500, returns identical, explained variance meaningless (-inf / nan).
    history = [
        healthy_row(i, ep_rew_mean=500.0, explained_variance=-30.0, returns_std=0.0, approx_kl=0.002, clip_fraction=0.01)
        for i in range(40)
    ]
    assert [f for f in scan(history) if f.severity != "info"] == []


def test_non_finite():
    history = [*healthy(10), healthy_row(10, value_loss=float("nan"), skipped_updates=3.0)]
    (finding,) = detect(history)
    assert finding.code == "non_finite" and finding.severity == "critical"
    assert finding.values["skipped_updates"] == 3.0
    assert "VecCheckNan" in finding.advice
    assert codes([*healthy(10), healthy_row(10, params_finite=0.0)]) == ["non_finite"]
    assert codes([*healthy(10), healthy_row(10, obs_finite=0.0)]) == ["non_finite"]


def test_frozen_policy():
    # The symptom from the field: KL ~2e-7, clip fraction 0, entropy stuck high.
    frozen = [healthy_row(i, approx_kl=2e-7, clip_fraction=0.0, std=1.0, entropy_loss=-1.42) for i in range(10)]
    found = detect(frozen)
    assert [f.code for f in found] == ["frozen_policy"]
    assert found[0].severity == "warning" and "learning_rate" in found[0].advice
    # four updates are not yet "several"
    assert codes(frozen[:4]) == []
    # a converged policy (std down to 30% of its start) is not frozen
    converged = [healthy_row(i, approx_kl=2e-7, clip_fraction=0.0, std=1.0 - 0.07 * i) for i in range(10)]
    assert "frozen_policy" not in codes(converged)


def test_value_collapse():
    # The symptom from the field: explained variance -143 while returns vary.
    broken = [*healthy(10), *[healthy_row(10 + i, explained_variance=-143.0) for i in range(5)]]
    assert codes(broken) == ["value_collapse"]
    assert codes(broken[:-1]) == []  # 4 updates are not persistent


def test_value_divergence():
    # 0.004 -> 0.4: a 100x spike, growing, and the critic now worse than a constant
    history = [healthy_row(i, value_loss=0.004) for i in range(20)]
    history += [
        healthy_row(20, value_loss=0.1, explained_variance=0.1),
        healthy_row(21, value_loss=0.4, explained_variance=-2.0),
    ]
    (finding,) = detect(history)
    assert finding.code == "value_divergence" and finding.severity == "critical"
    assert finding.values["ratio"] == pytest.approx(100.0)
    # a single spike that falls back is not divergence
    blip = [*history[:20], healthy_row(20, value_loss=0.4, explained_variance=-1.0), healthy_row(21, value_loss=0.004)]
    assert codes(blip) == []
    # the same loss curve while explained variance holds: the returns changed scale (learning)
    learning = [*history[:20], healthy_row(20, value_loss=0.1), healthy_row(21, value_loss=0.4)]
    assert codes(learning) == []
    # from a converged critic's noise floor back to early-training levels: not divergence
    early = [healthy_row(i, value_loss=1.0) for i in range(10)]
    settled = [healthy_row(10 + i, value_loss=3e-5) for i in range(12)]
    back_up = [healthy_row(22, value_loss=0.005), healthy_row(23, value_loss=0.008)]
    assert codes(early + settled + back_up) == []
    # sustained but not growing, only 10-20x: a warning
    sustained = [
        *history[:20],
        healthy_row(20, value_loss=0.06, explained_variance=0.3),
        healthy_row(21, value_loss=0.05, explained_variance=0.4),
    ]
    assert [(f.code, f.severity) for f in detect(sustained)] == [("value_divergence", "warning")]


def test_value_loss_jump_from_rollouts_without_episode_ends_is_not_divergence():
    # Hopper-v5 (safe profile, seed 0, steps 14,336-25,088): standing through 1,000-step episodes, most
    # 512-step rollouts end no episode, their targets barely vary and the loss sits near 1e-3; the
    # rollouts with an episode end have 30-100x the loss at 30-50x the return spread.
    loss_ev_spread = [
        (0.0011, -6.0, 0.024), (0.0028, -6.8, 0.038), (0.0012, -0.6, 0.052), (0.0034, -7.4, 0.042),
        (0.0009, -17.0, 0.013), (0.0028, -12.3, 0.031), (0.0004, -16.8, 0.011), (0.0021, -6.7, 0.037),
        (0.0004, -9.1, 0.012), (1.1986, 0.03, 1.654), (0.8765, 0.25, 1.036), (0.5206, 0.11, 0.835),
        (0.2786, 0.53, 1.273), (0.0091, -17.0, 0.058), (0.0390, 0.51, 0.557), (0.0334, -1.8, 0.219),
        (0.0148, -4.6, 0.098), (0.0014, -1.3, 0.053), (0.0050, -6.9, 0.049), (0.0007, -3.8, 0.019),
        (0.3219, 0.04, 0.967), (1.0589, -0.21, 0.678),
    ]  # fmt: skip
    rows = [
        healthy_row(i, value_loss=loss, explained_variance=ev, returns_std=spread)
        for i, (loss, ev, spread) in enumerate(loss_ev_spread)
    ]
    assert "value_divergence" not in codes(rows)
    # The raw losses alone (SB3's PPO logs no return spread) are a growing 100x spike over the level,
    # but this loss swings 100x between rollouts anyway: the rise does not stand out from its own spread.
    raw = [{k: v for k, v in row.items() if k != "returns_std"} for row in rows]
    assert [f.code for f in detect(raw) if f.code == "value_divergence"] == []
    history = HealthHistory.of(raw)
    assert history.loss_ratios[-1]["raw"] > 50 and math.sqrt(history.loss_log_var["raw"]) > 1.5
    # HalfCheetah-v5 (safe, seed 1, the 12 updates up to step 90,624 as `sb3-safe diagnose` reads them): a
    # well-fitted critic whose rollouts swing between 0.98 and 0.3 explained variance as the return spread
    # swings. The loss relative to the spread reads as a spike in the last two updates, the raw loss does not.
    cheetah = [
        (0.0112, 0.96, 0.571), (0.0088, 0.36, 0.104), (0.0109, 0.61, 0.189), (0.0211, 0.98, 1.158),
        (0.0179, 0.98, 1.097), (0.0039, 0.99, 0.663), (0.0299, 0.96, 0.967), (0.0043, 0.99, 0.738),
        (0.0236, -0.22, 0.173), (0.0196, 0.98, 1.184), (0.0092, 0.57, 0.165), (0.0135, 0.27, 0.173),
    ]  # fmt: skip
    relative = [loss / spread**2 for loss, _, spread in cheetah]
    assert min(relative[-2:]) / statistics.median(relative[:-2]) > 10
    cheetah_rows = [
        healthy_row(i, value_loss=loss, explained_variance=ev, returns_std=spread)
        for i, (loss, ev, spread) in enumerate(cheetah)
    ]
    assert "value_divergence" not in codes(cheetah_rows)
    # the same spread with a loss that keeps growing is still divergence
    diverging = [
        *rows[:-2],
        *(healthy_row(20 + i, value_loss=v, explained_variance=-3.0, returns_std=0.9) for i, v in enumerate((30.0, 200.0))),
    ]
    assert [(f.code, f.severity) for f in detect(diverging) if f.code == "value_divergence"] == [
        ("value_divergence", "critical")
    ]


def test_reward_collapse():
    # up to -250; the best level held for three updates in a row is -350 (-350, -300, -250): a gain of 850
    rising = [healthy_row(i, ep_rew_mean=-1200.0 + 50.0 * i) for i in range(20)]
    lows = [healthy_row(20, ep_rew_mean=-1000.0), healthy_row(21, ep_rew_mean=-1050.0), healthy_row(22, ep_rew_mean=-1040.0)]
    collapsed = [*rising, *lows]  # lost 690 of 850
    (finding,) = detect(collapsed)
    assert finding.code == "reward_collapse" and finding.severity == "critical"
    assert finding.values["fraction_lost"] == pytest.approx(690 / 850)
    assert finding.values["best_ep_rew_mean"] == -350.0
    assert codes(collapsed[:-1]) == []  # two updates down are a dip (a noisy multi-agent return has them), not yet a collapse
    down = [healthy_row(20 + i, ep_rew_mean=-500.0 - 50 * i) for i in range(3)]
    assert codes([*rising, *down]) == []  # lost at most 47%
    # the same fall in a mean over 5 episodes (early training, or just after a rollback): noise, not a collapse
    few = [*rising, *(healthy_row(20 + i, ep_rew_mean=-1000.0 - 10 * i, episodes=5.0) for i in range(3))]
    assert codes(few) == []
    # a collapse takes three means over 20+ episodes; the 5-episode means do not count as one of them
    assert codes([*few[:-1], healthy_row(22, ep_rew_mean=-1050.0, episodes=20.0)]) == []
    enough = [*few, *(healthy_row(23 + i, ep_rew_mean=-1050.0 - i, episodes=20.0 + i) for i in range(3))]
    assert codes(enough) == ["reward_collapse"]
    # nor is a mean over one episode a level to collapse from (Hopper-v5 after a rollback emptied the
    # episode buffer: one standing episode at 978, then 256 over 30 episodes)
    standing = [healthy_row(i, ep_rew_mean=20.0 + 10.0 * i, episodes=100.0) for i in range(20)]  # up to 210
    after_rollback = [healthy_row(20, ep_rew_mean=978.0, episodes=1.0), healthy_row(21, ep_rew_mean=978.0, episodes=1.0)]
    lower = [healthy_row(22, ep_rew_mean=256.0, episodes=30.0), healthy_row(23, ep_rew_mean=250.0, episodes=35.0)]
    assert codes([*standing, *after_rollback, *lower]) == []


def test_a_one_update_spike_is_no_level_to_collapse_from():
    """
    An outlier episode in a window that turns over every update (many agents' short episodes)
    lifts one update's mean return; the next update is back on the trend. Measured: MPE
    simple_spread with reward outliers, 24 slots of 25-step episodes, 123 episodes per rollout.
    """
    trend = [healthy_row(i, ep_rew_mean=-29.0 + 0.2 * i, episodes=100.0) for i in range(20)]
    spike = [*trend[:10], healthy_row(10, ep_rew_mean=52.9, episodes=100.0), *trend[11:]]
    assert codes(spike) == []
    assert gain_lost(spike, -29.0) is None  # no held gain above the run's noise
    # a level held for three updates is one: losing it is a collapse
    held = [*trend[:10], *(healthy_row(10 + i, ep_rew_mean=52.9 + 0.1 * i, episodes=100.0) for i in range(3))]
    fallen = [*held, *(healthy_row(13 + i, ep_rew_mean=-29.0 - 0.5 * i, episodes=100.0) for i in range(3))]
    assert codes(fallen) == ["reward_collapse"]


def test_a_repeated_mean_is_one_measurement():
    """
    An update after which no episode ended repeats the previous mean exactly (100-step episodes,
    50-step rollouts: every other update). The repeat is no second update of a collapse, and its
    zero change does not make the run look noiseless.
    """
    held = [healthy_row(i, ep_rew_mean=-29.0 + 0.2 * i, episodes=100.0) for i in range(10)]
    held += [healthy_row(10 + i, ep_rew_mean=52.9 + 0.1 * i, episodes=100.0) for i in range(3)]
    once = [*held, *(healthy_row(i, ep_rew_mean=-29.0, episodes=100.0) for i in (13, 14))]
    twice = [*once, *(healthy_row(i, ep_rew_mean=-29.2, episodes=100.0) for i in (15, 16))]
    assert codes(twice) == []  # two low measurements, each reported twice
    thrice = [*twice, healthy_row(17, ep_rew_mean=-29.4, episodes=100.0)]
    assert codes(thrice) == ["reward_collapse"]


def test_trimmed_mean_by_hand():
    # 10 values, 10% cut from each end: 1 and 100 go; the mean of 2..9 is 5.5
    values = [100.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 1.0]
    mean, sem = trimmed_mean(values, 0.1)
    assert mean == 5.5
    # winsorized: [2, 2, 3, ..., 9, 9], sample std 2.6352..., over (1 - 0.2) * sqrt(10)
    winsorized = np.array([2.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 9.0])
    assert sem == pytest.approx(winsorized.std(ddof=1) / (0.8 * np.sqrt(10)))
    assert trimmed_mean([3.0]) == (3.0, 0.0)
    # the same shape at any scale: the mean and its error scale with the returns
    big_mean, big_sem = trimmed_mean([1e4 * v for v in values], 0.1)
    assert big_mean == pytest.approx(1e4 * mean) and big_sem == pytest.approx(1e4 * sem)


def test_the_default_cut_keeps_rare_successes_and_drops_a_few_outliers():
    # 100 episodes: 2 cut from each end. Two outliers of 1e6 go; 9 successes of 1.0 among zeros stay.
    values = [0.0] * 89 + [1.0] * 9 + [1e6, 1e6]
    mean, _ = trimmed_mean(values)
    assert mean == pytest.approx(9.0 / 96)  # kept: 87 zeros and the 9 ones (2 zeros and both outliers cut)
    assert trimmed_mean([0.0] * 91 + [1.0] * 9)[0] == pytest.approx(7.0 / 96)  # 2 of the ones are cut


def test_a_gain_within_the_returns_standard_error_is_no_gain():
    """
    VMAS transport, 2,000 episodes per update: returns near 0 (+-0.5 per episode) drift by a few
    hundredths. Measured against the standard error the monitor logs, that is noise, not a gain to lose.
    """
    rows = [
        healthy_row(i, ep_rew_mean=0.001 * i if i < 5 else 0.035 + 0.0001 * i, episodes=2000.0, ep_rew_sem=0.011)
        for i in range(10)
    ]
    rows += [healthy_row(i, ep_rew_mean=0.006 + 0.0001 * i, episodes=2000.0, ep_rew_sem=0.011) for i in (10, 11, 12)]
    assert codes(rows) == []
    # the same drift measured 100 times more precisely is a real gain, and losing it a collapse
    precise = [{**row, "ep_rew_sem": 0.00011} for row in rows]
    assert codes(precise) == ["reward_collapse"]


def test_gain_lost():
    # -1200 up to -250; the best level held for three updates is -350: a gain of 850
    rising = [healthy_row(i, ep_rew_mean=-1200.0 + 50.0 * i) for i in range(20)]
    assert gain_lost(rising, -350.0) == 0.0
    assert gain_lost(rising, -775.0) == pytest.approx(0.5)
    assert gain_lost(rising, -1200.0) == pytest.approx(1.0)
    flat = [healthy_row(i, ep_rew_mean=-1200.0 + i) for i in range(20)]  # gained 19 of 1200: nothing to lose yet
    assert gain_lost(flat, -1500.0) is None
    assert gain_lost([healthy_row(0)], -1500.0) is None  # one update: no gain yet
    no_returns = [{k: v for k, v in healthy_row(i).items() if k != "ep_rew_mean"} for i in range(3)]
    assert gain_lost(no_returns, -1500.0) is None


def test_no_progress():
    # Acrobot-v1 at learning_rate 1e-3: -500 (every episode times out) while the entropy falls to 40%
    flat = [healthy_row(i, ep_rew_mean=-500.0, std=1.0 - 0.02 * i, episodes=100.0) for i in range(30)]
    (finding,) = detect(flat)
    assert (finding.code, finding.severity) == ("no_progress", "warning")
    assert finding.values["entropy_kept"] == pytest.approx(0.42)
    assert codes(flat[:-1]) == []  # 29 updates: too early to say
    still_exploring = [{**row, "std": 1.0 - 0.01 * i} for i, row in enumerate(flat)]  # 71% kept
    assert codes(still_exploring) == []
    improving = [{**row, "ep_rew_mean": -500.0 + 4.0 * i} for i, row in enumerate(flat)]  # -500 -> -384: 23% gained
    assert codes(improving) == []
    few_episodes = [{**row, "episodes": 10.0} for row in flat]  # 1,000-step episodes, short rollouts
    assert codes(few_episodes) == []


def test_no_progress_is_not_said_of_a_noisy_run_that_gained():
    """
    MPE simple_spread, safe profile, seed 0 (measured): the per-agent return went from -26.5 to -20.5 in 71
    updates, each a mean over ~140 episodes that turn over every update (its changes' spread 0.75), while the
    entropy fell below half. 7.9x the noise: progress for no_progress (3x), not yet a gain a collapse could lose (8x).
    """
    rng = np.random.default_rng(0)
    level = np.linspace(-26.5, -21.5, 72)
    noisy = level + rng.normal(0.0, 0.55, size=72)
    noisy[0], noisy[60] = -26.5, -20.5
    rows = [healthy_row(i, ep_rew_mean=float(r), std=1.0 - 0.008 * i, episodes=140.0) for i, r in enumerate(noisy)]
    history = HealthHistory.of(rows)
    gain = history.best_return - history.start_return  # type: ignore[operator]
    assert 3 * return_noise(history, history.thresholds) < gain
    assert "no_progress" not in codes(rows)
    flat = [{**row, "ep_rew_mean": -26.5 + float(rng.normal(0.0, 0.55))} for row in rows]
    assert "no_progress" in codes(flat)


def test_entropy_collapse():
    history = [healthy_row(i, std=1.0 * (0.5**i)) for i in range(5)]  # std 1 -> 0.06 in 5 updates
    assert codes(history) == ["entropy_collapse"]
    slow = [healthy_row(i, std=1.0 - 0.02 * i) for i in range(5)]
    assert codes(slow) == []


def test_kl_spike():
    history = [*healthy(5), healthy_row(5, approx_kl=0.2, clip_fraction=0.6)]
    assert codes(history, target_kl=0.015) == ["kl_spike"]
    assert codes([*healthy(5), healthy_row(5, approx_kl=0.05, clip_fraction=0.6)], target_kl=0.015) == []  # < 5x
    assert codes([*healthy(5), healthy_row(5, approx_kl=0.2, clip_fraction=0.6)]) == ["kl_spike"]  # > 0.1 absolute


def blowup_stream(scale: float = 1.0, **late: float) -> list[dict[str, float]]:
    """30 calm updates at approx KL 0.01 * scale, then spikes of 10-100x in 4 of 6 updates, with ``late`` on each."""
    calm = [healthy_row(i, approx_kl=0.01 * scale * (1.2 if i % 2 else 0.8), std=0.3) for i in range(30)]
    spikes = [0.5, 0.02, 1.0, 0.3, 0.015, 2.0]
    return calm + [healthy_row(30 + j, approx_kl=kl * scale, **{"std": 0.3, **late}) for j, kl in enumerate(spikes)]


def test_policy_blowup():
    # confirmed by the clip fraction
    found = [f for f in scan(blowup_stream(clip_fraction=0.5)) if f.code == "policy_blowup"]
    assert len(found) == 1 and found[0].severity == "critical"
    # the third spike (update 34) makes it sustained; the onset is the calm update before the first (update 30)
    assert found[0].timestep == 2048 * 34 and found[0].onset == 2048 * 30, found
    assert "sb3-safe recover" in found[0].advice
    # free of scale: a run whose KL level is 100x higher blows up at the same update
    scaled = [f for f in scan(blowup_stream(scale=100.0, clip_fraction=0.5)) if f.code == "policy_blowup"]
    assert [(f.timestep, f.onset) for f in scaled] == [(found[0].timestep, found[0].onset)]
    # confirmed by a std that grows back (0.3 -> 0.6), or by a return that falls
    assert "policy_blowup" in {f.code for f in scan(blowup_stream(std=0.6))}
    assert "policy_blowup" in {f.code for f in scan(blowup_stream(ep_rew_mean=-1500.0))}
    # spikes alone (low clip fraction, std and return as before) are not a blow-up; nor are fewer spikes
    assert "policy_blowup" not in {f.code for f in scan(blowup_stream())}
    two = blowup_stream(clip_fraction=0.5)
    for row in two[32:]:
        row["approx_kl"] = 0.01
    assert "policy_blowup" not in {f.code for f in scan(two)}
    # a KL stop that holds every update near target_kl never reaches 10x its own level
    capped = [healthy_row(i, approx_kl=0.015 + 0.01 * (i % 3 == 0), clip_fraction=0.5) for i in range(200)]
    assert "policy_blowup" not in {f.code for f in scan(capped)}


def test_a_blowup_with_sparse_spikes():
    """
    The 100M-step baseline's shape: per-update approx KL from ~0.02 to a median of ~0.06 with rare huge spikes, the
    std growing back from 0.13 to 0.33. The median of the latest 10 at 2.5x the level is enough with the std as witness.
    """
    calm = [healthy_row(i, approx_kl=0.02 * (1.1 if i % 2 else 0.9), std=0.13, clip_fraction=0.2) for i in range(40)]
    late = [0.06, 0.05, 0.9, 0.07, 0.06, 0.08, 0.05, 0.07, 0.06, 0.07]
    std_back = [healthy_row(40 + j, approx_kl=kl, std=0.13 + 0.02 * j, clip_fraction=0.25) for j, kl in enumerate(late)]
    found = [f for f in scan([*calm, *std_back]) if f.code == "policy_blowup"]
    # the 7th update of the rise lifts the median of the latest 10 past 2.5x; the onset is the update before the window
    assert len(found) == 1 and found[0].severity == "critical" and found[0].timestep == 2048 * 46
    assert found[0].onset == 2048 * 36
    # the same KL with the std flat and only the return falling is not enough for a sparse blow-up
    fallen = [
        healthy_row(40 + j, approx_kl=kl, std=0.13, clip_fraction=0.25, ep_rew_mean=-1500.0) for j, kl in enumerate(late)
    ]
    assert "policy_blowup" not in {f.code for f in scan([*calm, *fallen])}


def test_every_code_is_tested_here():
    tested = {
        "non_finite",
        "frozen_policy",
        "value_collapse",
        "value_divergence",
        "reward_collapse",
        "entropy_collapse",
        "kl_spike",
        "no_progress",
        "policy_blowup",
    }
    assert set(CODES) == tested


def test_missing_metrics_keep_detectors_silent():
    # plain SB3 logs: no grad norms, no returns_std, no skipped_updates, no std
    rows = [{"timesteps": float(i), "approx_kl": 0.01, "clip_fraction": 0.1, "value_loss": 0.3} for i in range(30)]
    assert scan(rows) == []


def test_scan_reports_each_episode_of_trouble_once():
    bad = healthy_row(10, value_loss=float("nan"))
    history = [*healthy(10), bad, bad, bad, *healthy(5), bad]
    found = scan(history, quiet_updates=2)
    assert [(f.code, f.timestep) for f in found] == [("non_finite", 2048 * 11), ("non_finite", 2048 * 11)]
    assert len(scan(history, quiet_updates=10)) == 1


def test_thresholds_are_parameters():
    history = [*healthy(5), healthy_row(5, approx_kl=0.05, clip_fraction=0.6)]
    assert codes(history, thresholds=Thresholds(kl_spike_factor=2.0), target_kl=0.015) == ["kl_spike"]


def test_every_field_of_the_history_is_saved_loaded_and_copied():
    """
    HealthHistory's state is its dataclass fields; saving, loading and copying are derived from them.
    A field that does not survive JSON and comes back equal, or an attribute set outside the fields,
    fails here: nothing else has to list it.
    """
    import dataclasses
    import json

    history = HealthHistory()
    for i in range(60):
        loss = 0.5 if i < 40 else 0.5 * 3.0 ** (i - 39)
        history.push(healthy_row(i, value_loss=loss, explained_variance=0.8 if i < 40 else -0.5, episodes=100.0))
    names = {f.name for f in dataclasses.fields(history)}
    assert set(vars(history)) - names == {"thresholds", "window", "cache"}
    state = history.state_dict()
    assert set(state) == names
    restored = HealthHistory()
    restored.load_state_dict(json.loads(json.dumps(state)))
    copied = history.copy()
    for name in names:
        assert getattr(restored, name) == getattr(history, name), name
        assert getattr(copied, name) == getattr(history, name), name
    # nothing is shared: the copy and the original go on apart
    copied.push(healthy_row(60))
    assert history.count == 60 and copied.count == 61 and len(history.rows) == history.window
    assert copied.rows[-1] is not history.rows[-1] and copied.first is not history.first
