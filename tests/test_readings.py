"""Readings a learner can trust (issue 24): one vocabulary for E, ΔE read as a direction,
signed neurons, sinks and negative scores said out loud, a training time said up front."""

from conftest import run_cli

SMALL = dict(preset="lesson-tiny", d_model=32, n_layers=1, batch_size=8, lr=3e-3, warmup=2, eval_batches=2)


def text_file_for_training(tmp_path):
    from glassformer.lessons import adjectives

    path = tmp_path / "text.txt"
    path.write_text(adjectives.text(2000, seed=3))
    return path


def test_training_says_how_long_it_will_take_before_it_is_done(tmp_path, capsys):
    from glassformer.train import TrainConfig, train
    from glassformer.train.loop import ESTIMATE_STEPS

    seen = []
    settings = TrainConfig(
        data=str(text_file_for_training(tmp_path)), out=str(tmp_path / "run"), steps=20, eval_every=5, **SMALL
    )
    train(settings, progress=False, on_estimate=seen.append)
    assert len(seen) == 1, seen
    e = seen[0]
    # said early: after the first step and the timed ones, with the rest still to come
    assert e.after_step == 1 + ESTIMATE_STEPS and e.steps_left == 20 - e.after_step
    assert e.evaluations == 3  # at steps 10, 15 and 20 (the one at 5 came before the estimate)
    assert e.seconds_left >= e.steps_left * e.seconds_per_step > 0


def test_the_train_command_prints_the_estimate(tmp_path, capsys):
    argv = ["train", "--data", "lesson:adjectives", "--out", tmp_path / "run", "--preset", "lesson-tiny"]
    argv += ["--d-model", "32", "--n-layers", "1", "--steps", "10", "--eval-every", "5", "--eval-batches", "2", "-q"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "estimated time left:" in out + err and "for 4 more steps" in out + err
