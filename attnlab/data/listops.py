"""ListOps (Nangia & Bowman 2018), in the Long Range Arena form (Tay et al. 2020), generated offline.

    "[MAX 2 9 [MIN 4 7 ] 0 ]"  -> label 9

Operators over digits 0-9, written as in LRA: [MAX, [MIN, [MED (median, int() of the mean of the two
middle values for an even count, as LRA's int(np.median)), [SM (sum modulo 10); "]" closes a list;
tokens are separated by single spaces. The label is the value of the whole expression (10 classes).

Lengths (min_length/max_length) are counted in CHARACTERS of the text, i.e. in tokens for the byte
tokenizer. Trees are grown towards a length drawn uniformly from [min_length, max_length] and kept
when they land inside it, so long settings (min_length=1000, max_length=2000, as LRA's 500-2000
tokens) cost about as much per character as short ones. max_depth bounds the nesting (a single
list of digits has depth 1); max_args bounds the items per list.
"""

from __future__ import annotations

import random
import statistics

from attnlab.errors import DataError

OPERATORS = ("[MAX", "[MIN", "[MED", "[SM")
END = "]"
_MIN_TREE = len("[SM 0 0 ]")  # 9: the shortest expression
_MAX_TRIES = 200


def listops(
    *,
    n_train: int = 4000,
    n_validation: int = 500,
    n_test: int = 500,
    max_depth: int = 3,
    max_args: int = 5,
    min_length: int = 30,
    max_length: int = 120,
    seed: int = 0,
) -> dict[str, list[dict]]:
    """{"train"/"validation"/"test": [{"text": str, "label": int 0..9}, ...]}, deterministic in `seed`."""
    _check(max_depth, max_args, min_length, max_length)
    rng = random.Random(f"listops-{seed}")
    sizes = {"train": n_train, "validation": n_validation, "test": n_test}
    out = {}
    for split, n in sizes.items():
        out[split] = [_example(rng, max_depth, max_args, min_length, max_length) for _ in range(n)]
    return out


def evaluate(tokens: list) -> int:
    """Value of a nested expression [op, child, ...] where a child is an int or another expression."""
    op, *args = tokens
    values = [a if isinstance(a, int) else evaluate(a) for a in args]
    if op == "[MAX":
        return max(values)
    if op == "[MIN":
        return min(values)
    if op == "[MED":
        return int(statistics.median(values))
    return sum(values) % 10


def _example(rng: random.Random, max_depth: int, max_args: int, min_length: int, max_length: int) -> dict:
    for _ in range(_MAX_TRIES):
        target = rng.randint(min_length, max_length)
        tree = _tree(rng, target, max_depth, max_args)
        text = " ".join(_flatten(tree))
        if min_length <= len(text) <= max_length:
            return {"text": text, "label": evaluate(tree)}
    raise DataError(
        f"could not generate listops sequences of {min_length}-{max_length} characters with max_depth={max_depth} "
        f"max_args={max_args}; widen task.data.builtin.min_length/max_length or raise max_args"
    )


def _tree(rng: random.Random, budget: int, depth: int, max_args: int) -> list:
    """An expression of about `budget` characters (counting one trailing space) and nesting <= depth."""
    op = rng.choice(OPERATORS)
    inner = budget - len(op) - 1 - len(END) - 1  # what is left for the items, each with its space
    if depth <= 1 or inner < 2 + _MIN_TREE + 1:
        k = max(2, min(max_args, inner // 2))
        return [op] + [rng.randint(0, 9) for _ in range(k)]
    child_cap = _capacity(depth - 1, max_args)
    k_min = max(2, -(-inner // child_cap))  # enough items to absorb the budget
    k = rng.randint(min(k_min, max_args), max_args)
    n_sub = rng.randint(1, max(1, min(k, (inner - 2 * k) // (_MIN_TREE + 1) + 1)))
    if k_min > k // 2:
        n_sub = k  # long budgets need every slot to be a list
    sub_budget = inner - 2 * (k - n_sub)
    cuts = sorted(rng.random() for _ in range(n_sub - 1))
    shares = [b - a for a, b in zip([0.0, *cuts], [*cuts, 1.0])]
    slots = [True] * n_sub + [False] * (k - n_sub)
    rng.shuffle(slots)
    items: list = [op]
    shares_iter = iter(shares)
    for is_list in slots:
        if is_list:
            size = max(_MIN_TREE + 1, round(next(shares_iter) * sub_budget))
            items.append(_tree(rng, size, depth - 1, max_args))
        else:
            items.append(rng.randint(0, 9))
    return items


def _capacity(depth: int, max_args: int) -> int:
    """Longest expression (plus its trailing space) with this nesting bound."""
    if depth <= 0:
        return 2
    return len("[MAX ") + 2 + max_args * _capacity(depth - 1, max_args)


def _flatten(tree: list) -> list[str]:
    out = [tree[0]]
    for item in tree[1:]:
        out.extend(_flatten(item) if isinstance(item, list) else [str(item)])
    out.append(END)
    return out


def _check(max_depth: int, max_args: int, min_length: int, max_length: int) -> None:
    if max_depth < 1 or max_args < 2:
        raise DataError(f"listops needs max_depth >= 1 and max_args >= 2 (got {max_depth}, {max_args})")
    if not _MIN_TREE <= min_length <= max_length:
        raise DataError(
            f"listops needs {_MIN_TREE} <= min_length <= max_length (got {min_length}, {max_length})"
        )
    longest = _capacity(max_depth, max_args) - 1
    if min_length > longest:
        raise DataError(
            f"listops min_length={min_length} is longer than any expression with max_depth={max_depth} "
            f"max_args={max_args} (at most {longest} characters); raise task.data.builtin.max_depth or max_args"
        )
