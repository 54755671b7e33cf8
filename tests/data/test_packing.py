"""Language-model windows: packing documents and cutting the stream."""

from __future__ import annotations

from attnlab.data.packing import pack, windows


def test_pack_joins_documents_with_eos():
    ids, mask = pack([[5, 6, 7], [8, 9]], eos_id=2)
    assert ids == [5, 6, 7, 2, 8, 9, 2] and all(mask)


def test_windows_overlap_by_one_so_every_token_but_the_first_is_a_target_once():
    stream = list(range(10, 33))  # 23 tokens
    cut = windows(stream, [True] * len(stream), size=5)
    assert all(len(ids) <= 5 for ids, _ in cut)
    targets = [t for ids, mask in cut for t, counted in zip(ids, mask) if counted]
    assert targets == stream[1:]
    assert [ids[0] for ids, _ in cut[1:]] == [ids[-1] for ids, _ in cut[:-1]]


def test_windows_carry_the_loss_mask_and_drop_windows_without_targets():
    ids = list(range(9))
    mask = [False] * 9
    mask[7] = True
    cut = windows(ids, mask, size=4)  # windows [0..3] [3..6] [6..8]
    assert cut == [([6, 7, 8], [False, True, False])]
