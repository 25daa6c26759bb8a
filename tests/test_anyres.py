"""anyres_max_9 (reference Sec. 1.3 and 1.6.2): tiles, letterbox cropping, shrinking, positions and newlines."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from modeling_hour_llava.anyres_hour_llava import (
    anyres_memory_and_queries,
    anyres_tiles,
    anyres_token_count,
    select_best_resolution,
    shrunk_size,
    tile_grid_shape,
    unpadded_size,
)
from modeling_hour_llava.configuration_hour_llava import default_image_grid_pinpoints

PINPOINTS = default_image_grid_pinpoints(384)  # 36 grids, 1x1 .. 6x6 tiles of 384 px


def test_best_resolution_keeps_the_most_pixels_then_wastes_the_least():
    assert select_best_resolution((384, 384), PINPOINTS) == (384, 384)
    assert select_best_resolution((384, 768), PINPOINTS) == (384, 768)  # (height, width): two tiles side by side
    assert select_best_resolution((1000, 500), PINPOINTS) == (1152, 768)
    # Exhaustive check of the rule on a few sizes.
    for height, width in [(300, 1000), (1999, 641), (2300, 2300), (50, 60)]:
        best = select_best_resolution((height, width), PINPOINTS)

        def effective(hw, height=height, width=width):
            scale = min(hw[1] / width, hw[0] / height)
            return min(int(width * scale) * int(height * scale), width * height)

        assert effective(best) == max(effective(c) for c in PINPOINTS)
        ties = [c for c in PINPOINTS if effective(c) == effective(best)]
        assert best[0] * best[1] == min(h * w for h, w in ties)


def test_unpadding_and_shrinking_follow_the_reference():
    assert unpadded_size((27, 54), (384, 768)) == (27, 54)  # no letterbox
    # A 500 x 300 (w x h) image in a 2 x 2 grid: content height int(300 * 54 / 500) = 32 rows; padding 11 each side.
    assert unpadded_size((54, 54), (300, 500)) == (32, 54)
    # An odd margin keeps one extra row, as the reference's slice does: 54 - 2 * ((54 - 31) // 2) = 32.
    assert unpadded_size((54, 54), (290, 500)) == (32, 54)
    assert shrunk_size((81, 81), 9 * 27 * 27) == (81, 81)  # 3 x 3 tiles fit
    assert shrunk_size((162, 162), 9 * 27 * 27) == (81, 81)  # 6 x 6 tiles shrink by 2
    assert shrunk_size((86, 86), 9 * 27 * 27) == (86, 86)  # within the 10% slack


def test_tiles_are_base_then_rows():
    image = Image.new("RGB", (768, 384), (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, 384, 384))  # left half red
    tiles = anyres_tiles(image, PINPOINTS, 384)
    assert len(tiles) == 1 + 2 and all(t.size == (384, 384) for t in tiles)
    assert tiles[1].getpixel((100, 200))[0] > 200 and tiles[2].getpixel((300, 200))[0] < 50
    # Resolution is kept, not thrown away: 800 x 400 goes up to 2 x 3 tiles (1152 x 768) rather than down to 2.
    assert len(anyres_tiles(Image.new("RGB", (800, 400)), PINPOINTS, 384)) == 1 + 6


@pytest.mark.parametrize("mode", ["random", "uniform"])
def test_anyres_positions_and_newlines(mode):
    grid, width = 27, 4
    # 300 x 500 (h x w): one row of two tiles (384 x 768 keeps every pixel) -> a 27 x 54 grid; the content is
    # int(500 * 27 / 300) = 45 columns wide, so (54 - 45) // 2 = 4 columns go on each side -> 27 x 46.
    image_size = (300, 500)
    assert tile_grid_shape(image_size, PINPOINTS, 384) == (1, 2)
    tiles = torch.randn(1 + 2, grid * grid, width)
    newline = torch.full((width,), -7.0)
    memory, queries = anyres_memory_and_queries(
        tiles, newline, image_size, 1, 2, 0.25, mode, 9 * grid * grid, torch.Generator().manual_seed(0)
    )
    rows, cols = 27, 46
    assert len(memory) == grid * grid + rows * (cols + 1)
    # Base tokens share the id of the grid token nearest to them; every newline has id rows * cols.
    base_ids = memory.positions[: grid * grid].view(grid, grid)
    near = (
        torch.linspace(0, rows - 1, grid).round().long()[:, None] * cols
        + torch.linspace(0, cols - 1, grid).round().long()
    )
    assert torch.equal(base_ids, near)
    grid_ids = memory.positions[grid * grid :].view(rows, cols + 1)
    assert torch.equal(grid_ids[:, :cols].flatten(), torch.arange(rows * cols))
    assert torch.all(grid_ids[:, cols] == rows * cols)

    count = anyres_token_count(image_size, PINPOINTS, 384, grid, 0.25, mode, 9)
    assert len(queries) == count
    is_newline = queries.positions == rows * cols
    assert torch.all(queries.embeds[is_newline] == -7.0)
    base_kept = 183 if mode == "random" else 196
    assert not is_newline[:base_kept].any()
    # After the base, each kept grid row ends with a newline; positions grow within the grid part.
    grid_part = queries.positions[base_kept:]
    assert bool(is_newline[-1])
    tokens = grid_part[grid_part != rows * cols]
    assert torch.all(tokens[1:] > tokens[:-1])
    expected_rows = rows if mode == "random" else math.ceil(rows / 2)
    assert int(is_newline.sum()) == expected_rows
    assert len(tokens) == (
        math.ceil(rows * cols / 4) if mode == "random" else math.ceil(rows / 2) * math.ceil(cols / 2)
    )


def test_tiles_are_stitched_row_major_and_cropped():
    from modeling_hour_llava.anyres_hour_llava import stitch_and_unpad

    grid = 27
    tiles = torch.zeros(2, grid * grid, 1)
    tiles[..., 0] = (torch.arange(2)[:, None] * 1000 + torch.arange(grid * grid)[None]).float()
    stitched = stitch_and_unpad(tiles, 1, 2, (300, 500), 9 * grid * grid)[..., 0]
    assert stitched.shape == (27, 46)
    for r, c in [(0, 0), (5, 22), (5, 23), (26, 45)]:
        column = c + 4  # the letterbox crop
        assert stitched[r, c] == (column // grid) * 1000 + r * grid + column % grid
