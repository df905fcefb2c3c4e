"""ComfyUI 0.3.64's prompt validation, reproduced as a pure function over `/object_info`.

Why this exists: the ComfyUI emulator must answer `POST /prompt` with exactly the 400 bodies a real server
sends (clients parse them), and our tests must prove that every shipped graph would be accepted by the
real node schemas. The rules follow ComfyUI's `execution.validate_prompt` / `validate_inputs`, including
their quirks:

- validation stops at the first node with no or an unknown `class_type` (`invalid_prompt`, no node_errors);
- only nodes whose object_info says `output_node: true` are outputs; each output is validated
  recursively through its links, every node once (the results are shared between outputs);
- an exception while following a link (missing node -> KeyError, bad slot -> IndexError/TypeError) is
  reported on the *linked* node, with the extra_info of the input that linked to it
  (`exception_during_inner_validation`); at an output node itself it is `exception_during_validation`;
- INT/FLOAT/STRING/BOOLEAN literals are converted first (`"64"` passes for INT, `64.7` becomes 64);
  min/max are checked, `step` is not; legacy combos (`[[...], {...}]`) must contain the value, V3 combos
  (`["COMBO", {"options": ...}]`) are not checked; unknown extra inputs are ignored; optional inputs
  may be missing;
- LoadImage-style nodes check their file through VALIDATE_INPUTS (`custom_validation_failed`), not the
  combo list;
- the top-level `details` joins the output node's *own* errors only, and `dependent_outputs` collects,
  for every failing output, every node that failed so far (so an error found while validating the
  first output is also listed under the second one).

Prompts that are not a JSON object make the real server answer 500; here they raise `TypeError` and the
caller decides. The real server iterates outputs and inputs as Python sets (random order per process);
this module uses the prompt's order and the declared input order, which is one of the orders the real
server can produce.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PromptCheck", "files_in_combo_lists", "validate_prompt"]

# Nodes that validate some inputs with VALIDATE_INPUTS (file existence) instead of the combo check:
# class_type -> (input name, message prefix). Their other inputs get the normal checks.
_FILE_VALIDATED_INPUTS: dict[str, tuple[str, str]] = {
    "LoadImage": ("image", "Invalid image file"),
    "LoadAudio": ("audio", "Invalid audio file"),
    "LoadImageMask": ("image", "Invalid image file"),
    "LoadLatent": ("latent", "Invalid latent file"),
}

# Where ComfyUI 0.3.64 raises inside execution.py; tracebacks are informational only.
_TB_PROMPT = '  File "/opt/ComfyUI/execution.py", line 1010, in validate_prompt\n'
_TB_RECURSE = '  File "/opt/ComfyUI/execution.py", line 808, in validate_inputs\n'
_TB_NODE_LOOKUP = '  File "/opt/ComfyUI/execution.py", line 788, in validate_inputs\n'
_TB_SLOT_LOOKUP = '  File "/opt/ComfyUI/execution.py", line 790, in validate_inputs\n'
_TB_OTHER = '  File "/opt/ComfyUI/execution.py", line 760, in validate_inputs\n'


@dataclass
class PromptCheck:
    """The outcome of validating one prompt, in the shapes `POST /prompt` answers with.

    `status_code` 200 means the prompt would be queued (node_errors may still list dropped branches);
    `outputs` are the output node ids that would execute; `prompt` is a copy with literal values
    converted to their declared types, as the real server stores it in the queue and history.
    """

    ok: bool
    status_code: int
    error: dict[str, Any] | None = None
    node_errors: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    prompt: dict[str, Any] = field(default_factory=dict)

    def response_body(self, prompt_id: str, number: int) -> dict[str, Any]:
        """The JSON body the server sends: the queued answer on 200, the error answer on 400."""
        if self.ok:
            return {"prompt_id": prompt_id, "number": number, "node_errors": self.node_errors}
        return {"error": self.error, "node_errors": self.node_errors}


class _TracedError(Exception):
    """Carries a Python exception together with the ComfyUI traceback lines it would have produced."""

    def __init__(self, exc: BaseException, frames: list[str]) -> None:
        super().__init__(str(exc))
        self.exc = exc
        self.frames = frames


def _error(type_: str, message: str, details: str, extra_info: dict[str, Any] | None = None) -> dict:
    return {"type": type_, "message": message, "details": details, "extra_info": extra_info or {}}


def _is_v3(info: Mapping[str, Any]) -> bool:
    """V3 (comfy_api) nodes always publish these three keys; their RETURN_TYPES is a list, not a tuple."""
    return "deprecated" in info and "experimental" in info and "api_node" in info


class _ReturnTypes(list):
    """A list that fails like the real RETURN_TYPES (a tuple for legacy nodes) when indexed badly."""

    def __init__(self, items: list[Any], legacy: bool) -> None:
        super().__init__(items)
        self.legacy = legacy

    def __getitem__(self, index: Any) -> Any:
        kind = "tuple" if self.legacy else "list"
        if isinstance(index, bool) or not isinstance(index, int | slice):
            raise TypeError(f"{kind} indices must be integers or slices, not {type(index).__name__}")
        try:
            return super().__getitem__(index)
        except IndexError:
            raise IndexError(f"{kind} index out of range") from None


def _input_info(info: Mapping[str, Any], name: str) -> tuple[Any, str | None, dict[str, Any]]:
    """`get_input_info`: (type, category, extra options) of a declared input."""
    inputs = info.get("input") or {}
    for category in ("required", "optional", "hidden"):
        section = inputs.get(category) or {}
        if name in section:
            spec = section[name]
            if isinstance(spec, str):
                return spec, category, {}
            input_type = spec[0]
            extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            return input_type, category, extra
    return None, None, {}


def _declared_inputs(info: Mapping[str, Any]) -> list[str]:
    inputs = info.get("input") or {}
    names: list[str] = []
    for category in ("required", "optional"):
        for name in inputs.get(category) or {}:
            if name not in names:
                names.append(name)
    return names


def _types_compatible(received: Any, expected: Any) -> bool:
    """`validate_node_input` (non-strict): equal, a `*` wildcard, or overlapping comma-separated unions."""
    if received == expected:
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    if received == "*" or expected == "*":
        return True
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return bool(got & want)


class _Validator:
    def __init__(
        self,
        prompt: dict[str, Any],
        object_info: Mapping[str, Any],
        file_exists: Callable[[str, str], bool],
    ) -> None:
        self.prompt = prompt
        self.object_info = object_info
        self.file_exists = file_exists
        self.validated: dict[Any, tuple[bool, list[dict], Any]] = {}
        self.in_progress: set[Any] = set()

    def _linked_return_types(self, node_id: Any) -> _ReturnTypes:
        try:
            class_type = self.prompt[node_id]["class_type"]
        except KeyError as exc:
            raise _TracedError(exc, [_TB_NODE_LOOKUP]) from None
        info = self.object_info[class_type]
        return _ReturnTypes(list(info.get("output") or []), legacy=not _is_v3(info))

    def validate_inputs(self, unique_id: Any) -> tuple[bool, list[dict], Any]:
        if unique_id in self.validated:
            return self.validated[unique_id]
        if unique_id in self.in_progress:
            raise _TracedError(RecursionError("maximum recursion depth exceeded"), [_TB_RECURSE])
        self.in_progress.add(unique_id)
        try:
            return self._validate_node(unique_id)
        except _TracedError:
            raise
        except Exception as exc:  # ComfyUI reports any exception here the same way
            raise _TracedError(exc, [_TB_OTHER]) from None
        finally:
            self.in_progress.discard(unique_id)

    def _validate_node(self, unique_id: Any) -> tuple[bool, list[dict], Any]:
        node = self.prompt[unique_id]
        try:
            inputs = node["inputs"]
            class_type = node["class_type"]
            info = self.object_info[class_type]
        except (KeyError, TypeError) as exc:
            raise _TracedError(exc, [_TB_OTHER]) from None

        file_input = _FILE_VALIDATED_INPUTS.get(class_type)
        custom_inputs = {file_input[0]} if file_input else set()
        errors: list[dict] = []
        valid = True

        for name in _declared_inputs(info):
            input_type, category, extra = _input_info(info, name)
            if name not in inputs:
                if category == "required":
                    errors.append(
                        _error(
                            "required_input_missing", "Required input is missing", name, {"input_name": name}
                        )
                    )
                continue

            val = inputs[name]
            config = [input_type, extra]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append(
                        _error(
                            "bad_linked_input",
                            "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                            name,
                            {"input_name": name, "input_config": config, "received_value": val},
                        )
                    )
                    continue
                linked_id, slot = val
                try:
                    received_type = self._linked_return_types(linked_id)[slot]
                except _TracedError:
                    raise
                except (IndexError, TypeError) as exc:
                    raise _TracedError(exc, [_TB_SLOT_LOOKUP]) from None
                if not _types_compatible(received_type, input_type):
                    errors.append(
                        _error(
                            "return_type_mismatch",
                            "Return type mismatch between linked nodes",
                            f"{name}, received_type({received_type}) mismatch input_type({input_type})",
                            {
                                "input_name": name,
                                "input_config": config,
                                "received_type": received_type,
                                "linked_node": val,
                            },
                        )
                    )
                    continue
                try:
                    result = self.validate_inputs(linked_id)
                    if result[0] is False:
                        valid = False
                        continue
                except _TracedError as traced:
                    valid = False
                    self.validated[linked_id] = (
                        False,
                        [
                            _error(
                                "exception_during_inner_validation",
                                "Exception when validating inner node",
                                str(traced.exc),
                                {
                                    "input_name": name,
                                    "input_config": config,
                                    "exception_message": str(traced.exc),
                                    "exception_type": type(traced.exc).__name__,
                                    "traceback": [_TB_RECURSE, *traced.frames],
                                    "linked_node": val,
                                },
                            )
                        ],
                        linked_id,
                    )
                    continue
            else:
                if isinstance(val, dict) and "__value__" in val:
                    val = val["__value__"]
                    inputs[name] = val
                try:
                    if input_type == "INT":
                        val = int(val)
                    elif input_type == "FLOAT":
                        val = float(val)
                    elif input_type == "STRING":
                        val = str(val)
                    elif input_type == "BOOLEAN":
                        val = bool(val)
                    inputs[name] = val
                except Exception as exc:
                    errors.append(
                        _error(
                            "invalid_input_type",
                            f"Failed to convert an input value to a {input_type} value",
                            f"{name}, {val}, {exc}",
                            {
                                "input_name": name,
                                "input_config": config,
                                "received_value": val,
                                "exception_message": str(exc),
                            },
                        )
                    )
                    continue

                if name in custom_inputs:
                    continue
                try:
                    error = self._check_value(name, val, input_type, extra, config)
                except TypeError as exc:  # e.g. a string compared with a numeric min
                    raise _TracedError(exc, [_TB_OTHER]) from None
                if error is not None:
                    errors.append(error)
                    continue

        if file_input is not None:
            name, prefix = file_input
            val = inputs.get(name)
            if name in inputs and not isinstance(val, list):
                if not self.file_exists(class_type, val):
                    errors.append(
                        _error(
                            "custom_validation_failed",
                            "Custom validation failed for node",
                            f"{name} - {prefix}: {val}",
                            {"input_name": name},
                        )
                    )

        prior = self.validated.get(unique_id)
        if prior is not None and prior[1]:  # a cycle back to this node was reported while following links
            errors = prior[1] + errors
        result = (False, errors, unique_id) if errors or valid is not True else (True, [], unique_id)
        self.validated[unique_id] = result
        return result

    @staticmethod
    def _check_value(name: str, val: Any, input_type: Any, extra: dict, config: list) -> dict | None:
        if "min" in extra and val < extra["min"]:
            return _error(
                "value_smaller_than_min",
                f"Value {val} smaller than min of {extra['min']}",
                name,
                {"input_name": name, "input_config": config, "received_value": val},
            )
        if "max" in extra and val > extra["max"]:
            return _error(
                "value_bigger_than_max",
                f"Value {val} bigger than max of {extra['max']}",
                name,
                {"input_name": name, "input_config": config, "received_value": val},
            )
        if isinstance(input_type, list) and val not in input_type:
            if len(input_type) > 20:
                list_info, input_config = f"(list of length {len(input_type)})", None
            else:
                list_info, input_config = str(input_type), config
            return _error(
                "value_not_in_list",
                "Value not in list",
                f"{name}: '{val}' not in {list_info}",
                {"input_name": name, "input_config": input_config, "received_value": val},
            )
        return None


def files_in_combo_lists(object_info: Mapping[str, Any]) -> Callable[[str, str], bool]:
    """Files "exist" when the node's own combo list offers them (the caller injects what it has)."""

    def exists(class_type: str, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        name = value[: -len(" [input]")] if value.endswith(" [input]") else value
        info = object_info.get(class_type) or {}
        file_input = _FILE_VALIDATED_INPUTS[class_type][0]
        input_type, _, _ = _input_info(info, file_input)
        return isinstance(input_type, list) and name in input_type

    return exists


def validate_prompt(
    prompt: Any,
    object_info: Mapping[str, Any],
    *,
    partial_execution_targets: Collection[str] | None = None,
    file_exists: Callable[[str, str], bool] | None = None,
) -> PromptCheck:
    """Validate a `POST /prompt` body's `prompt` as ComfyUI 0.3.64 would.

    `prompt=None` is a body without a `prompt` key (`no_prompt`). `file_exists(class_type, value)`
    decides whether a LoadImage-style file is present; by default a file exists when the node's combo
    list in `object_info` contains it. Raises `TypeError` for a prompt the real server answers with 500.
    """
    if prompt is None:
        return PromptCheck(
            ok=False,
            status_code=400,
            error=_error("no_prompt", "No prompt provided", "No prompt provided"),
        )
    if not isinstance(prompt, dict):
        raise TypeError(f"prompt must be a JSON object, not {type(prompt).__name__}")

    prompt = copy.deepcopy(prompt)
    outputs: list[str] = []
    for node_id, node in prompt.items():
        if not isinstance(node, dict | list | str):
            raise TypeError(f"argument of type '{type(node).__name__}' is not iterable")
        if "class_type" not in node:
            return PromptCheck(
                ok=False,
                status_code=400,
                error=_error(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{node_id}'",
                ),
                prompt=prompt,
            )
        if not isinstance(node, dict):
            raise TypeError("string indices must be integers, not 'str'")
        class_type = node["class_type"]
        try:
            info = object_info.get(class_type)
        except TypeError:
            raise TypeError(f"unhashable type: '{type(class_type).__name__}'") from None
        if info is None:
            return PromptCheck(
                ok=False,
                status_code=400,
                error=_error(
                    "invalid_prompt",
                    f"Cannot execute because node {class_type} does not exist.",
                    f"Node ID '#{node_id}'",
                ),
                prompt=prompt,
            )
        if info.get("output_node") is True and (
            partial_execution_targets is None or node_id in partial_execution_targets
        ):
            if node_id not in outputs:
                outputs.append(node_id)

    if not outputs:
        return PromptCheck(
            ok=False,
            status_code=400,
            error=_error("prompt_no_outputs", "Prompt has no outputs", ""),
            prompt=prompt,
        )

    validator = _Validator(prompt, object_info, file_exists or files_in_combo_lists(object_info))
    good_outputs: list[str] = []
    failed: list[tuple[str, list[dict]]] = []
    node_errors: dict[str, Any] = {}
    for output in outputs:
        try:
            valid, reasons, _ = validator.validate_inputs(output)
        except _TracedError as traced:
            valid = False
            reasons = [
                _error(
                    "exception_during_validation",
                    "Exception when validating node",
                    str(traced.exc),
                    {"exception_type": type(traced.exc).__name__, "traceback": [_TB_PROMPT, *traced.frames]},
                )
            ]
            validator.validated[output] = (False, reasons, output)

        if valid is True:
            good_outputs.append(output)
            continue
        failed.append((output, reasons))
        for node_id, (node_valid, node_reasons, _) in validator.validated.items():
            if node_valid is not True and node_reasons:
                if node_id not in node_errors:
                    node_errors[node_id] = {
                        "errors": node_reasons,
                        "dependent_outputs": [],
                        "class_type": prompt[node_id]["class_type"],
                    }
                node_errors[node_id]["dependent_outputs"].append(output)

    if not good_outputs:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, errors in failed for e in errors)
        return PromptCheck(
            ok=False,
            status_code=400,
            error=_error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details),
            node_errors=node_errors,
            prompt=prompt,
        )
    return PromptCheck(ok=True, status_code=200, node_errors=node_errors, outputs=good_outputs, prompt=prompt)
