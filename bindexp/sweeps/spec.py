"""Sweep YAMLs: read, check, expand, and build each run's command line the way `wandb agent` does.

    config = load_sweep("sweeps/eval.yaml")
    problems = check_sweep(config)              # [] when the file is well formed
    for params in expand(config, seed=0):       # grid, or random with a count
        argv = agent_command(config, params)    # exactly the list `wandb agent` would run

The local runner that executes these one after another is `bindexp.sweeps.local`.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings

from bindexp.errors import InputError
from bindexp.jobs.registry import JOBS

# What the agent runs when a sweep has no `command` (wandb's own default).
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
ARG_MACROS = {"${args}", "${args_no_hyphens}", "${args_no_boolean_flags}", "${args_json}", "${args_no_equals}"}
METHODS = ("grid", "random", "bayes")
TOP_LEVEL_KEYS = {
    "name", "description", "program", "method", "metric", "parameters", "command",
    "early_terminate", "run_cap", "controller", "job", "image_uri",
}
DISTRIBUTIONS = {
    "constant": ("value",),
    "categorical": ("values",),
    "int_uniform": ("min", "max"),
    "uniform": ("min", "max"),
    "q_uniform": ("min", "max", "q"),
    "log_uniform": ("min", "max"),
    "log_uniform_values": ("min", "max"),
    "q_log_uniform_values": ("min", "max", "q"),
    "normal": ("mu", "sigma"),
    "q_normal": ("mu", "sigma", "q"),
}
_PYTHON = re.compile(r"python[0-9.]*(\.exe)?$")
PARAM_KEYS = {"value", "values", "probabilities", "distribution", "min", "max", "q", "mu", "sigma"}

# The job of each project script (its settings class parses the script's arguments): from JOBS.
SCRIPT_JOBS = {job.script: name for name, job in JOBS.items() if job.script}


class SweepError(InputError):
    """A sweep file the local runner cannot use; the message is one line."""


def load_sweep(path: str | Path) -> dict[str, Any]:
    """The sweep YAML as a dict; `name` defaults to the file's stem."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SweepError(f"no sweep file {path}")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SweepError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise SweepError(f"{path}: a sweep file is a mapping with method, parameters and command")
    config.setdefault("name", path.stem)
    return config


def check_sweep(config: dict[str, Any], *, strict: bool = True) -> list[str]:
    """Problems with a sweep config, one line each ([] when fine).

    wandb 0.31 ships no sweep-config JSON schema (it lives in W&B's server and in the `sweeps`
    package, which pins numpy<2), so the structure W&B documents is checked here: method,
    metric, flat parameters with value / values / distribution, and a command that passes the
    arguments. `strict` adds this project's rules: no entity or project in the file, the
    command names the venv's interpreter rather than `${interpreter}`, parameter names of two
    letters or more.
    """
    problems = []
    allowed = TOP_LEVEL_KEYS if strict else TOP_LEVEL_KEYS | {"entity", "project"}
    for key in sorted(set(config) - allowed):
        why = "pass it to `wandb sweep` / the runner instead" if key in ("entity", "project") else "unknown key"
        problems.append(f"{key}: {why}")
    method = config.get("method")
    if method not in METHODS:
        problems.append(f"method: must be one of {', '.join(METHODS)}, got {method!r}")
    metric = config.get("metric")
    if metric is not None:
        if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
            problems.append("metric: needs a name")
        elif metric.get("goal", "minimize") not in ("minimize", "maximize"):
            problems.append(f"metric.goal: minimize or maximize, got {metric.get('goal')!r}")
    elif method == "bayes":
        problems.append("metric: bayes search needs a metric to optimise")
    parameters = config.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        problems.append("parameters: a non-empty mapping of name -> {value | values | distribution}")
        parameters = {}
    for name, spec in parameters.items():
        problems.extend(f"parameters.{name}: {p}" for p in _parameter_problems(name, spec, method, strict))
    problems.extend(_command_problems(config, strict))
    if "run_cap" in config and not (isinstance(config["run_cap"], int) and config["run_cap"] > 0):
        problems.append("run_cap: a positive integer")
    return problems


def _parameter_problems(name: str, spec: Any, method: Any, strict: bool) -> list[str]:
    if strict and len(str(name)) < 2:
        return ["names need two letters or more (pydantic-settings gives one-letter names a single dash)"]
    if not isinstance(spec, dict):
        return ["must be a mapping such as {value: 3} or {values: [1, 2]}"]
    if "parameters" in spec:
        return ["nested parameters are not allowed: keep sweeps flat"]
    unknown = sorted(set(spec) - PARAM_KEYS)
    if unknown:
        return [f"unknown key {unknown[0]!r}"]
    if "value" in spec and "values" in spec:
        return ["give value or values, not both"]
    if not {"value", "values", "distribution", "min", "max"} & set(spec):
        return ["needs value, values or a distribution"]
    if "values" in spec:
        values = spec["values"]
        if not isinstance(values, list) or not values:
            return ["values must be a non-empty list"]
        probabilities = spec.get("probabilities")
        if probabilities is not None and (len(probabilities) != len(values) or abs(sum(probabilities) - 1) > 1e-6):
            return ["probabilities must match values and sum to 1"]
    distribution = _distribution(spec)
    if distribution not in DISTRIBUTIONS:
        return [f"unknown distribution {distribution!r}"]
    missing = [k for k in DISTRIBUTIONS[distribution] if k not in spec]
    if missing:
        return [f"distribution {distribution} needs {', '.join(missing)}"]
    if method == "grid" and distribution not in ("constant", "categorical"):
        return [f"grid search needs value or values, not distribution {distribution}"]
    return []


def _distribution(spec: dict[str, Any]) -> str:
    """The distribution W&B infers for a parameter spec."""
    if "distribution" in spec:
        return spec["distribution"]
    if "value" in spec:
        return "constant"
    if "values" in spec:
        return "categorical"
    if isinstance(spec.get("min"), int) and isinstance(spec.get("max"), int):
        return "int_uniform"
    return "uniform"


def _command_problems(config: dict[str, Any], strict: bool) -> list[str]:
    command = config.get("command", DEFAULT_COMMAND)
    if not isinstance(command, list) or not command or not all(isinstance(c, (str, int, float)) for c in command):
        return ["command: a list of strings"]
    command = [str(c) for c in command]
    problems = []
    if not ARG_MACROS & set(command):
        problems.append("command: must pass the parameters, e.g. ${args}")
    if "${args_json_file}" in command:
        problems.append("command: ${args_json_file} is not supported; use ${args}")
    if "${program}" in command and not config.get("program"):
        problems.append("program: the command uses ${program} but none is given")
    if strict:
        first = next((c for c in command if c != "${env}"), "")
        if first == "${interpreter}":
            problems.append("command: name the project's interpreter (.venv/bin/python), not ${interpreter} (= python)")
        elif not _PYTHON.match(Path(first).name):
            problems.append(f"command: start with the project's interpreter (.venv/bin/python), not {first!r}")
    return problems


def sweep_program(config: dict[str, Any]) -> str | None:
    """The script a sweep runs (its `program`, or the first .py file in its command)."""
    if config.get("program"):
        return str(config["program"])
    for chunk in config.get("command", []):
        if str(chunk).endswith(".py"):
            return str(chunk)
    return None


def sweep_folder_name(name: str) -> str:
    """The sweep's name as one safe folder name: no path separators, no leading dots (`../../x` -> `_.._x`)."""
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", name).lstrip(".") or "sweep"


def script_job(program: str | None) -> str | None:
    """The job of a bindexp script (`scripts/eval.py` -> `eval`), named relative to the checkout or by
    any path that leads to it; None for anything else (a relative path that exists here but is not
    the checkout's script is not ours either)."""
    if not program:
        return None
    path = Path(program)
    checkout = Path(__file__).resolve().parents[2]
    if not path.is_absolute() and not path.exists():
        return SCRIPT_JOBS.get(path.as_posix())
    try:
        return SCRIPT_JOBS.get(path.resolve().relative_to(checkout).as_posix())
    except ValueError:
        return None


def settings_class(config: dict[str, Any]) -> type[BaseSettings] | None:
    """The settings class the sweep's program parses its arguments into, if it is ours."""
    job = script_job(sweep_program(config))
    return JOBS[job].settings_class() if job else None


def foreign_command(argv: list[str]) -> str | None:
    """Why a run's command line (`agent_command`) does not run a bindexp script with its arguments
    (None when it does): it must be `[/usr/bin/env] <python> scripts/<job>.py ...`."""
    start = 1 if argv and argv[0] == "/usr/bin/env" else 0
    if len(argv) <= start + 1 or not _PYTHON.match(Path(argv[start]).name):
        return f"it runs {argv[start] if len(argv) > start else 'nothing'!r}, not a Python interpreter"
    if script_job(argv[start + 1]) is None:
        return f"{argv[start + 1]!r} is not a bindexp script ({', '.join(sorted(SCRIPT_JOBS))})"
    return None


def configuration_problems(config: dict[str, Any], runs: Iterable[dict[str, Any]]) -> list[str]:
    """One line per bad parameter (name or value) among `runs`, checked against the settings class of
    the sweep's script; [] when every configuration parses, or when the script is not one of ours."""
    check = ConfigurationCheck(config)
    problems = check.unknown_names()
    for params in runs:
        problems += [line for line in check.problems(params) if line not in problems]
    return problems


class ConfigurationCheck:
    """A sweep's configurations against its script's settings class (nothing to check when the
    script is not ours): `unknown_names()`, the parameters the script does not have;
    `problems(params)`, one line per bad value in one configuration."""

    def __init__(self, config: dict[str, Any]):
        self.cls = settings_class(config)
        self.where = f"{sweep_program(config)} ({self.cls.__name__})" if self.cls is not None else ""
        self.names = list(config.get("parameters") or {})

    def unknown_names(self) -> list[str]:
        if self.cls is None:
            return []
        return [f"parameters.{n}: not a setting of {self.where}" for n in self.names if n not in self.cls.model_fields]

    def problems(self, params: dict[str, Any]) -> list[str]:
        from pydantic import ValidationError
        from pydantic_settings import CliApp, SettingsError

        if self.cls is None:
            return []
        known = {k: v for k, v in params.items() if k in self.cls.model_fields}
        problems: list[str] = []
        try:
            CliApp.run(self.cls, cli_args=agent_args(known)["args"])
        except ValidationError as err:
            for error in err.errors():
                name = str(error["loc"][0]) if error["loc"] else ""
                problems.append(f"parameters.{name}={known[name]!r}: {error['msg']}" if name in known
                                else f"{agent_args(known)['args']}: {error['msg']}")
        except SettingsError as err:
            problems.append(f"{agent_args(known)['args']}: {str(err).splitlines()[0]}")
        return list(dict.fromkeys(problems))


def parameter_values(spec: dict[str, Any]) -> list[Any]:
    """Every value a grid takes for this parameter (value or values)."""
    if "value" in spec:
        return [spec["value"]]
    if "values" in spec:
        return list(spec["values"])
    raise SweepError(f"grid search needs value or values, got {sorted(spec)}")


def expand(config: dict[str, Any], *, seed: int = 0, count: int | None = None,
           limit: int | None = None) -> list[dict[str, Any]]:
    """The parameter sets of a sweep: the full grid (first `count` if given), or `count` random draws.

    Grid order is the parameters' order in the file, the last one varying fastest. Random search
    draws with `random.Random(seed)`, so the same seed gives the same runs (and resumes). `count`
    defaults to the file's `run_cap`; random search needs one of them. `limit`: refuse (one line)
    a sweep of more configurations than that, before any is made.
    """
    return list(iter_configurations(config, seed=seed, count=count, limit=limit))


def configuration_count(config: dict[str, Any], count: int | None = None) -> int:
    """How many configurations `expand` gives, without making them."""
    count = count if count is not None else config.get("run_cap")
    if config.get("method") != "grid":
        return count or 0
    total = math.prod(len(parameter_values(spec)) for spec in config["parameters"].values())
    return total if count is None else min(count, total)


def iter_configurations(config: dict[str, Any], *, seed: int = 0, count: int | None = None,
                        limit: int | None = None) -> Iterator[dict[str, Any]]:
    """`expand`, one configuration at a time (the checks on the file and the limit come first)."""
    problems = check_sweep(config, strict=False)
    if problems:
        raise SweepError(problems[0])
    method = config["method"]
    parameters: dict[str, dict[str, Any]] = config["parameters"]
    count = count if count is not None else config.get("run_cap")
    if method == "bayes":
        raise SweepError("bayes search needs W&B's sweep controller (a server); use method grid or random locally")
    if method != "grid" and count is None:
        raise SweepError("random search needs a count (--count or run_cap in the file)")
    total = configuration_count(config, count)
    if limit is not None and total > limit:
        raise SweepError(f"the sweep has {total:,} configurations, more than --max_configurations={limit:,}; "
                         "narrow its parameters, run the first N with --count=N, or raise --max_configurations")
    return _configurations(parameters, method, seed, count)


def _configurations(parameters: dict[str, dict[str, Any]], method: str, seed: int,
                    count: int | None) -> Iterator[dict[str, Any]]:
    if method == "grid":
        names = list(parameters)
        grid = itertools.product(*(parameter_values(parameters[n]) for n in names))
        yield from (dict(zip(names, values)) for values in itertools.islice(grid, count))
        return
    rng = random.Random(seed)
    for _ in range(count or 0):
        yield {name: _draw(spec, rng) for name, spec in parameters.items()}


def _draw(spec: dict[str, Any], rng: random.Random) -> Any:
    kind = _distribution(spec)
    if kind == "constant":
        return spec["value"]
    if kind == "categorical":
        return rng.choices(spec["values"], weights=spec.get("probabilities"))[0]
    low, high = spec.get("min"), spec.get("max")
    if kind == "int_uniform":
        return rng.randint(low, high)
    if kind == "uniform":
        return rng.uniform(low, high)
    if kind == "q_uniform":
        return round(rng.uniform(low, high) / spec["q"]) * spec["q"]
    if kind == "log_uniform":  # bounds are natural logs
        return math.exp(rng.uniform(low, high))
    if kind == "log_uniform_values":
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    if kind == "q_log_uniform_values":
        return round(math.exp(rng.uniform(math.log(low), math.log(high))) / spec["q"]) * spec["q"]
    if kind == "normal":
        return rng.gauss(spec["mu"], spec["sigma"])
    if kind == "q_normal":
        return round(rng.gauss(spec["mu"], spec["sigma"]) / spec["q"]) * spec["q"]
    raise SweepError(f"distribution {kind} is not supported by the local runner")


def agent_args(params: dict[str, Any]) -> dict[str, list[str]]:
    """wandb's own formatting of parameter values: `args`, `args_no_boolean_flags`, ..."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    return create_sweep_command_args({"args": {name: {"value": value} for name, value in params.items()}})


def agent_command(config: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """The argument list `wandb agent` runs for these parameter values (macros filled in the same way)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command

    command = create_sweep_command([str(c) for c in config.get("command") or DEFAULT_COMMAND])
    macros: dict[str, list[str]] = {
        **agent_args(params),
        "interpreter": ["python"],
        "program": [str(config.get("program"))],
        "env": ["/usr/bin/env"] if os.name != "nt" else [],
    }
    argv: list[str] = []
    for chunk in command:
        if chunk.startswith("${") and chunk.endswith("}"):
            if chunk == "${args_json_file}":
                raise SweepError("${args_json_file} is not supported by the local runner; use ${args}")
            argv += macros.get(chunk[2:-1]) or []
        else:
            argv.append(chunk)
    return argv


def with_interpreter(argv: list[str], interpreter: str) -> list[str]:
    """Replace the Python the command names (`.venv/bin/python`, `python`) with `interpreter`."""
    start = 1 if argv and argv[0] == "/usr/bin/env" else 0
    if len(argv) > start and _PYTHON.match(Path(argv[start]).name):
        return [*argv[:start], interpreter, *argv[start + 1:]]
    return list(argv)


def iter_parameter_values(config: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(name, value) for every listed value of every parameter (distributions give their bounds)."""
    for name, spec in config.get("parameters", {}).items():
        if "value" in spec or "values" in spec:
            for value in parameter_values(spec):
                yield name, value
        else:
            for bound in ("min", "max"):
                if bound in spec:
                    yield name, spec[bound]
