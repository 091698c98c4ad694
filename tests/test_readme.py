"""The README's Quick start is what CI runs, word for word."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def test_quick_start_has_exactly_two_commands():
    commands = quick_start_commands()
    assert len(commands) == 2
    assert "parc-convert resnet50 --stages 3,4" in commands[0]


def test_ci_installs_and_tests_exactly_as_the_readme_says():
    install, tests = quick_start_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    install_part = install.split(" && .venv/bin/parc-convert")[0]
    assert install_part in ci
    assert tests in ci


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def _lines(block: str) -> list[list[str]]:
    import shlex

    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def test_the_readme_has_no_issue_numbers():
    assert not re.search(r"\bissues? \d+|#\d+\b", (ROOT / "README.md").read_text(), re.I)


def test_the_readme_says_where_the_commands_come_from():
    # Outside Quick start the commands are bare: the README says to activate the venv.
    section = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ")[0]
    assert "source .venv/bin/activate" in section


def test_no_two_commands_in_the_readme_write_the_same_file():
    # Run top to bottom, a second write of one file stops with exit 7 (no --force): each
    # conversion's output (-o, or the default <model>-parc.safetensors) is written once.
    from parc_surgery.models import file_stem

    written: dict[str, str] = {}
    for block in bash_blocks():
        for words in _lines(block):
            words = [w.removeprefix(".venv/bin/") for w in words]
            if not words or words[0] not in ("parc-convert", "parc-surgery"):
                continue
            args = words[1:] if words[0] == "parc-convert" else words[2:]
            command = "convert" if words[0] == "parc-convert" else words[1]
            if "--dry-run" in args or "--force" in args or command not in (
                "convert", "train", "finetune", "export", "import-official", "export-official",
                "cam", "erf",
            ):  # fmt: skip
                continue
            if "-o" in args:
                target = args[args.index("-o") + 1]
            elif command == "convert":
                target = f"{file_stem(args[0])}-parc.safetensors"
            else:
                continue
            assert target not in written, f"{target}: written by {written[target]!r} and {words!r}"
            written[target] = " ".join(words)


def test_the_digits_journey_runs_as_written_at_a_tiny_size(tmp_path, monkeypatch):
    # The README block from nothing to an exported model, each line run as written in this
    # process, with only its sizes cut: 5 images per class, 1 epoch, batch 8, no workers.
    import runpy
    import sys

    from typer.testing import CliRunner

    from parc_surgery.cli import app

    block = next(b for b in bash_blocks() if "examples/make_digits.py" in b)
    lines = _lines(block)
    assert [w[1] if w[0] == "parc-surgery" else w[0] for w in lines] == [
        "python", "train", "parc-convert", "eval", "finetune", "eval", "export",
    ]  # fmt: skip
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for words in lines:
        if words[0] == "python":
            script = str(ROOT / words[1])
            monkeypatch.setattr(sys, "argv", [script, *words[2:], "--per-class", "5"])
            with contextlib.suppress(SystemExit):
                runpy.run_path(script, run_name="__main__")
            continue
        args = words[1:] if words[0] == "parc-surgery" else ["convert", *words[1:]]
        args = [
            ("1" if previous == "--epochs" else w)
            for previous, w in zip(["", *args], args, strict=False)
        ]
        if args[0] in ("train", "finetune", "eval"):
            args += ["-b", "8", "-j", "0"]
        if args[0] in ("train", "finetune"):
            args += ["--lr-warmup-epochs", "0.5"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, f"{' '.join(words)}\n{result.output}"
    assert (tmp_path / "r26-parc-ft.onnx").is_file()


# Files a block reads or writes: checkpoints, state_dicts, ONNX models and hub folders.
_MODEL_FILE = r"[\w./-]+\.(?:safetensors|pt|pth|onnx)"
_PY_WRITE = re.compile(r"""(?:save\w*\(.*,\s*|output=)["'](""" + _MODEL_FILE + r""")["']""")
_PY_READ = re.compile(r"""["'](?:local-dir:)?([\w./-]+)["']""")


def _blocks_in_order() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```(bash|python)\n(.*?)\n```", text, flags=re.S)


def _reads_and_writes(kind: str, block: str) -> list[tuple[str, set[str], set[str], str]]:
    """Per line: (line, files read, files written, the block's `# needs` comment)."""
    import shlex

    needs = " ".join(line for line in block.splitlines() if line.startswith("# needs"))
    rows = []
    for line in block.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if kind == "python":
            writes = set(_PY_WRITE.findall(line))
            names = set(_PY_READ.findall(line.split("#", 1)[0])) - writes
            reads = {n for n in names if re.fullmatch(_MODEL_FILE, n) or "local-dir:" in line
                     or f'load("{n}")' in line}  # fmt: skip
            rows.append((line, reads, writes, needs))
            continue
        for command in line.split(" && "):
            rows.append((line, *_bash_reads_and_writes(shlex.split(command, comments=True)), needs))
    return rows


def _bash_reads_and_writes(words: list[str]) -> tuple[set[str], set[str]]:
    from parc_surgery.models import file_stem

    words = [w.removeprefix(".venv/bin/") for w in words]
    writes = {words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-o", "--output")}
    if words[:2] == ["parc-surgery", "save-pretrained"]:
        writes.add(words[3])
    if words[0] == "parc-convert" and not writes and "--dry-run" not in words:
        writes.add(f"{file_stem(words[1])}-parc.safetensors")
    if words[0] == "python" and "-c" in words:
        writes |= set(_PY_WRITE.findall(words[words.index("-c") + 1]))
        words = words[: words.index("-c")]
    reads = {w for w in words if re.fullmatch(_MODEL_FILE, w)} - writes
    if words[:2] == ["hf", "upload"]:
        reads.add(words[3])
    return reads, writes


def test_every_block_reads_only_files_made_above_it_or_named_as_needed():
    # Run top to bottom, a block may read a checkpoint, an official file or a hub folder only
    # when an earlier line wrote it, or when its `# needs` comment says where it comes from;
    # and no file is written twice (the second write, without --force, is exit 7).
    written: dict[str, str] = {}
    for kind, block in _blocks_in_order():
        for line, reads, writes, needs in _reads_and_writes(kind, block):
            for name in sorted(reads):
                assert name in written or name in needs, (
                    f"{name!r} is read before it is made: {line}"
                )
            for name in sorted(writes):
                assert name not in written, f"{name!r}: written by {written[name]!r} and {line!r}"
                written[name] = line


def _block_with(text: str) -> str:
    return next(b for _, b in _blocks_in_order() if text in b)


def _run_line(line: str):
    import shlex

    from typer.testing import CliRunner

    from parc_surgery.cli import app

    words = [w.removeprefix(".venv/bin/") for w in shlex.split(line, comments=True)]
    args = words[1:] if words[0] == "parc-surgery" else ["convert", *words[1:]]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{line}\n{result.output}"
    return result


def test_the_python_and_hub_blocks_run_as_written(tmp_path, monkeypatch):
    # In README order; what they read comes from the README lines above them: the Quick
    # start's ResNet50 and the ParC-Net-S of "Converting other models".
    import timm

    monkeypatch.chdir(tmp_path)
    quick_start = quick_start_commands()[0].split(" && .venv/bin/")[-1]
    parcnet = next(line for line in _block_with("--rules parcnet-s -o").splitlines()
                   if "--rules parcnet-s -o" in line)  # fmt: skip
    for line in (quick_start, parcnet):
        _run_line(line)
    namespace: dict = {}
    exec(_block_with("ps.parcify_(model"), namespace)  # "Checkpoints and loading in Python"
    assert (tmp_path / "cx.safetensors").is_file()
    exec(_block_with('"parcnet_s", pretrained=True'), namespace)
    assert namespace["model"].pretrained_cfg["input_size"] == (3, 256, 256)
    hub = _block_with("parc-surgery save-pretrained").splitlines()
    assert hub[1].startswith("hf upload")
    _run_line(hub[0])
    exec(_block_with('"local-dir:'), namespace)
    assert isinstance(namespace["model"], timm.models.ResNet)
    assert sum(p.numel() for p in namespace["model"].parameters()) == 23_737_640
    _the_hf_upload_line_pushes_the_folder_save_pretrained_wrote(hub, tmp_path, monkeypatch)


def _the_hf_upload_line_pushes_the_folder_save_pretrained_wrote(hub, tmp_path, monkeypatch):
    # `hf upload REPO_ID LOCAL_PATH`: LOCAL_PATH is save-pretrained's DIR, which holds the
    # three files the README names and nothing else; huggingface_hub's own CLI, when
    # installed, parses the line as that (its network calls recorded, none made).
    import shlex
    import socket
    import sys
    import types

    save = shlex.split(hub[0], comments=True)
    upload = shlex.split(hub[1], comments=True)
    folder = save[3]
    assert upload[:2] == ["hf", "upload"] and len(upload) == 4, upload
    assert upload[3] == folder and re.fullmatch(r"[\w.-]+/[\w.-]+", upload[2])
    assert upload[2].endswith(f"/{Path(folder).name}")
    on_disk = sorted(p.name for p in (tmp_path / folder).iterdir())
    assert on_disk == ["README.md", "config.json", "model.safetensors"]
    readme = (ROOT / "README.md").read_text()
    prose = readme.split("save-pretrained CHECKPOINT DIR` writes the folder", 1)[1]
    prose = prose.split("```", 1)[0]
    assert all(f"`{name}`" in prose for name in on_disk), prose
    try:
        import huggingface_hub
        from huggingface_hub.cli.hf import main
    except ImportError:
        return  # no `hf` CLI here (huggingface_hub < 0.34)
    calls = []

    def record(name):
        def call(self, *args, **kwargs):
            calls.append((name, kwargs))
            return types.SimpleNamespace(repo_id=kwargs.get("repo_id"), url="", commit_url="")

        return call

    def offline(*args, **kwargs):
        raise AssertionError("hf upload reached for the network")

    for name in ("create_repo", "upload_folder", "upload_file", "upload_large_folder"):
        monkeypatch.setattr(huggingface_hub.HfApi, name, record(name), raising=False)
    monkeypatch.setattr(socket, "create_connection", offline)
    monkeypatch.setattr(sys, "argv", upload)
    with contextlib.suppress(SystemExit):
        main()
    uploads = [kwargs for name, kwargs in calls if name == "upload_folder"]
    assert len(uploads) == 1, calls
    assert uploads[0]["folder_path"] == folder and uploads[0]["repo_id"] == upload[2]
    assert uploads[0].get("repo_type") in (None, "model")


def test_the_official_weights_block_runs_on_files_of_the_official_layout(tmp_path, monkeypatch):
    # The block's `# needs` files are the official release's; built here as test_official does.
    import torch

    from parc_surgery.official import ARCHS, _reference, to_official

    block = _block_with("import-official edgeformer_s.pt")
    needs = next(line for line in block.splitlines() if line.startswith("# needs"))
    assert set(re.findall(_MODEL_FILE, needs)) == {"edgeformer_s.pt", "ssd_edgeformer_s.pt"}
    official = to_official(ARCHS["parcnet-s"], _reference("parcnet-s")[0].state_dict())
    torch.save(official, tmp_path / "edgeformer_s.pt")
    encoder = {f"encoder.{k}": v for k, v in official.items()
               if not k.startswith(("classifier.", "conv_1x1_exp."))}  # fmt: skip
    heads = {"ssd_heads.0.loc_cls_layer.block.conv.weight": torch.zeros(42, 128, 3, 3)}
    torch.save({"model_state_dict": {**encoder, **heads}}, tmp_path / "ssd_edgeformer_s.pt")
    monkeypatch.chdir(tmp_path)
    for line in block.splitlines():
        if not line.startswith("#"):
            _run_line(line)
    back = torch.load(tmp_path / "parcnet-s-official.pt", weights_only=True)
    back = back.get("model_state_dict", back) if isinstance(back, dict) else back
    assert all(torch.equal(back[k], v) for k, v in official.items())


def _finetune_default(option: str):
    import typer.main

    from parc_surgery.cli import app

    params = typer.main.get_command(app).commands["finetune"].params
    (default,) = [p.default for p in params if option in p.opts]
    return default


def test_the_journey_states_its_measured_times_and_the_machine():
    # Times in the README are measurements of the block as written, with the machine said.
    text = (ROOT / "README.md").read_text()
    journey = text.split("examples/make_digits.py digits", 1)[1].split("\n| model |", 1)[0]
    measured = " ".join(journey.split("\n```\n", 1)[1].split())  # the paragraph after it
    for said in ("2-core", "1 thread", "`OMP_NUM_THREADS=1`", "not idle", "38.8 s an epoch",
                 "`parc-convert` 6.4 s", "`finetune` 220.6 s", "`export` 7.4 s"):  # fmt: skip
        assert said in measured, said
    # The finetune it timed is the block's (--epochs 5) at finetune's own defaults: the warm
    # start it states is the default read from the CLI, and no other warm start is claimed.
    block = journey.split("\n```\n", 1)[0]
    (finetune,) = [line for line in block.splitlines() if "parc-surgery finetune" in line]
    epochs = finetune.split("--epochs ", 1)[1].split()[0]
    assert "--warm-start-epochs" not in finetune
    warm = _finetune_default("--warm-start-epochs")
    stated = re.search(r"`finetune` [\d.]+ s \((\d+) warm-start epochs?, finetune's default, "
                       r"\+ (\d+) epochs\)", measured)  # fmt: skip
    assert stated is not None and (int(stated[1]), stated[2]) == (warm, epochs)
    section = text.split("## Recover accuracy", 1)[1].split("\n## ", 1)[0]
    assert f"(`--warm-start-epochs`, default {warm}" in section
    if warm == 0:  # nothing says the warm start runs unless asked for
        assert "no warm start by default" in section
        (row,) = [line for line in text.splitlines() if line.startswith("| `parc-surgery finetune")]
        assert "optional block-wise warm start (off by default)" in row
        from typer.testing import CliRunner

        from parc_surgery.cli import app

        help_text = CliRunner().invoke(app, ["finetune", "--help"], terminal_width=200).stdout
        assert "after an optional warm start" in help_text
        assert "--warm-start-epochs, default 0: off" in " ".join(help_text.split())
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "about four minutes" not in quick_start  # the suite takes over ten on 2 cores
    assert "2-core" in quick_start


def test_the_converting_other_models_block_runs_as_written(tmp_path, monkeypatch):
    # Every line, in order, in one folder: each exits 0 and writes the files the README says
    # (its -o, or <model>-parc.safetensors); a name collision would be exit 7.
    import shlex

    monkeypatch.chdir(tmp_path)
    block = _block_with("parc-convert torchvision:mobilenet_v2")
    lines = [line for line in block.splitlines() if line.strip()]
    assert len(lines) >= 10
    for line in lines:
        _run_line(line)
        _, writes = _bash_reads_and_writes(shlex.split(line, comments=True))
        assert all((tmp_path / name).is_file() for name in writes), line


def test_the_batch_block_runs_as_written(tmp_path, monkeypatch):
    # The jobs file as printed, the weights it names made by the line below it, then the
    # batch line: every job converts (the weights one strictly) and the report says so.
    import json
    import shlex

    import yaml

    monkeypatch.chdir(tmp_path)
    text = (ROOT / "README.md").read_text()
    jobs = re.search(r"```yaml\n(# jobs.yaml.*?)\n```", text, flags=re.S).group(1)
    (tmp_path / "jobs.yaml").write_text(jobs)
    make, batch = _block_with("parc-surgery batch jobs.yaml").splitlines()
    mkdir, save = make.split(" && ")
    assert shlex.split(mkdir)[:2] == ["mkdir", "-p"] and shlex.split(save)[:2] == ["python", "-c"]
    (tmp_path / shlex.split(mkdir)[2]).mkdir()
    exec(shlex.split(save)[2], {})
    weights = [job["weights"] for job in yaml.safe_load(jobs)["jobs"] if "weights" in job]
    assert weights and all((tmp_path / w).is_file() for w in weights)
    command, redirect = batch.split(" > ")
    report = json.loads(_run_line(command).stdout)  # what the redirect to report.json keeps
    assert redirect == "report.json"
    assert report["failed"] == 0 and len(report["jobs"]) == 3
    assert all((tmp_path / job["output"]).is_file() for job in report["jobs"])


def test_the_custom_rules_block_runs_and_its_comment_is_what_inspect_prints(monkeypatch):
    # Run from the repository root (the rules file is examples/custom_rules.yaml); the
    # containers the comment lists are the ones inspect reports.
    import json

    monkeypatch.chdir(ROOT)
    inspect, dry_run = _block_with("--rules examples/custom_rules.yaml").splitlines()
    listed = re.findall(r"(blocks\.\d) \((\d+)\)", inspect.split("#", 1)[1])
    report = json.loads(_run_line(inspect.split("#")[0] + " --format json").stdout)
    found = {(c["path"], str(c["blocks"])) for s in report["stages"] for c in s["containers"]}
    assert listed and set(listed) <= found, (listed, found)
    assert "blocks.3.1" in _run_line(dry_run).output  # "from index 1 on"


def test_the_cam_block_runs_as_written(tmp_path, monkeypatch):
    # The two photos and the untrained MobileNetV2 are made by the block's own python lines;
    # the conversion and the cam command then run and the figure is written.
    import shlex

    pytest.importorskip("torchcam")
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    for line in _block_with("parc-surgery cam").splitlines():
        words = shlex.split(line)
        if words[0] == "python":
            exec(words[2], {})
        else:
            _run_line(line)
    assert {"china.jpg", "flower.jpg", "mnv2.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    assert (tmp_path / "cam.png").stat().st_size > 0
