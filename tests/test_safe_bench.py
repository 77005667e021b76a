"""The safe-adaptation benchmarks: the simulated analyst's polygons (drawn or in given boxes) and the summaries."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "quality"))

from analyst import draw_disks
from rounds import BOX, disk_in_box, room_per_pixel
from safe import (
    analyst_variant,
    check_accuracy,
    class_lines,
    paired_lines,
    per_tile,
    summarize,
    target_lines,
    vanished_lines,
)

from backend.analysis.metrics import IGNORE_INDEX


def two_classes_and_a_strip() -> np.ndarray:
    """Class 0 on the left 150 columns, class 3 on the right 50, an unlabelled strip of rows between."""
    labels = np.zeros((200, 200), np.int64)
    labels[:, 150:] = 3
    labels[95:105] = IGNORE_INDEX
    return labels


@pytest.mark.parametrize("placement", ["area", "classes"])
def test_the_analysts_disks_lie_wholly_inside_one_class_and_never_overlap(placement):
    labels = two_classes_and_a_strip()
    disks = draw_disks(labels, 10, placement, seed=0)
    assert len(disks) == 10
    yy, xx = np.ogrid[:200, :200]
    drawn = np.zeros(labels.shape, int)
    for row, col, radius, label in disks:
        inside = (yy - row) ** 2 + (xx - col) ** 2 <= radius**2
        assert (labels[inside] == label).all()
        drawn += inside
    assert drawn.max() == 1


def test_placement_by_classes_gives_each_class_its_share_and_by_area_follows_the_areas():
    labels = two_classes_and_a_strip()
    by_class = [d[3] for d in draw_disks(labels, 10, "classes", seed=1)]
    assert by_class.count(0) == 5 and by_class.count(3) == 5
    by_area = [d[3] for seed in range(5) for d in draw_disks(labels, 10, "area", seed=seed)]
    assert by_area.count(0) > 2 * by_area.count(3)


def run(variant: str, gain: float, confident_changed: float, part: int, tile: int = 6) -> dict:
    signals = dict(
        changed=0.1, min_share_ratio=1.0, tta_agreement_original=0.9, tta_agreement_adapted=0.9,
        consistency_original=0.9, consistency_adapted=0.9, entropy_original=0.3, entropy_adapted=0.2,
        confident_changed=confident_changed, shares_original=[1.0], shares_adapted=[1.0],
    )  # fmt: skip
    return {
        "spec": {"variant": variant, "tile": tile, "part": part},
        "segment": {"miou": 0.5},
        "gain_miou": gain,
        "signals": signals,
    }


def test_with_the_self_check_a_rejected_run_scores_the_unadapted_map():
    runs = [run("v", 0.10, 0.01, 1), run("v", -0.09, 0.3, 2), run("v", -0.02, 0.0, 3)]
    row = summarize(runs)["v"]
    assert row["mean_gain"] == pytest.approx(100 * (0.10 - 0.09 - 0.02) / 3, abs=0.01)
    assert row["checked_mean_gain"] == pytest.approx(100 * (0.10 - 0.02) / 3, abs=0.01)
    assert (row["worst_gain"], row["checked_worst_gain"]) == (-9.0, -2.0)
    assert (row["below_minus_1"], row["checked_below_minus_1"], row["rejected"]) == (2, 1, 1)
    assert check_accuracy(runs) == {
        "runs": 3,
        "right": 2,
        "kept_a_loss_over_1_point": 1,
        "rejected_a_gain_over_1_point": 0,
    }


def test_targets_are_read_on_the_checked_gains_with_the_labelled_rows_held_to_their_own():
    summary = summarize([run("v", 0.10, 0.01, 1), run("v", -0.09, 0.3, 2), run("v", -0.02, 0.0, 3)])
    summary["v, 20 polygons by area"] = {**summary["v"], "checked_mean_gain": 2.5, "checked_worst_gain": 0.5}
    assert target_lines(summary) == [
        "- v: mean gain >= +1: met (+2.67); no image below -1: NOT met (worst -2.00, tile 6 part 3).",
        "- v, 20 polygons by area: mean gain >= +3: NOT met (+2.50); no image below +0: met (worst +0.50, "
        "tile 6 part 3).",
    ]


def test_per_tile_rows_average_each_held_out_tile_s_images_with_and_without_the_check():
    runs = [run("v", 0.10, 0.01, 1), run("v", -0.09, 0.3, 2), run("v", 0.04, 0.0, 1, tile=5)]
    table = per_tile(runs)["v"]
    assert table["tile 6"] == {
        "images": 2,
        "mean_segment": 50.0,
        "mean_gain": 0.5,
        "checked_mean_gain": 5.0,
        "checked_worst_gain": 0.0,
    }
    assert (table["tile 5"]["images"], table["tile 5"]["checked_mean_gain"]) == (1, 4.0)


def test_in_a_box_the_analyst_draws_the_widest_disk_inside_one_class_and_none_across_thin_stripes():
    labels = two_classes_and_a_strip()
    room = room_per_pixel(labels)
    assert room[50, 175] == 26  # the nearest class-0 pixel is column 149
    row, col, radius, label = disk_in_box(labels, room, 0, 168, radius=10.0)
    assert label == 3 and room[row, col] == room[0:BOX, 168 : 168 + BOX].max() and radius == 10.0
    stripes = np.indices((64, 64))[1] % 4  # four classes in one-pixel columns: no room anywhere
    assert disk_in_box(stripes, room_per_pixel(stripes), 0, 0, radius=10.0) is None


def test_erased_classes_are_split_by_whether_the_unadapted_map_had_found_them():
    def erasing(gain: float, water_iou: float, water_after: float) -> dict:
        result = run("defaults", gain, 0.0, part=1)
        result["segment"]["iou"] = {"Land": 0.8, "Water": water_iou}
        result["signals"] |= {"shares_original": [0.9, 0.1], "shares_adapted": [1.0 - water_after, water_after]}
        return result

    runs = [erasing(-0.04, 0.3, 0.0), erasing(0.20, 0.0, 0.01), erasing(0.10, 0.0, 0.0), erasing(0.5, 0.3, 0.09)]
    (line,) = vanished_lines(runs)
    assert "in 3 runs" in line
    assert "In 1 of them the unadapted map had found that class (IoU > 0), and those runs gained -4.0" in line
    assert "in the other 2 the erased class" in line and "gained +15.0 (0 lost)" in line


def test_the_per_class_line_averages_each_class_iou_change_over_the_images_that_have_it():
    first, second = run("defaults", 0.0, 0.0, part=1), run("defaults", 0.0, 0.0, part=2)
    first |= {"segment": {"iou": {"Road": 0.4, "Water": None}}, "adapt_segment": {"iou": {"Road": 0.3, "Water": None}}}
    second |= {"segment": {"iou": {"Road": 0.4, "Water": 0.9}}, "adapt_segment": {"iou": {"Road": 0.6, "Water": 0.8}}}
    assert class_lines([first, second]) == [
        "IoU change per class (no labels, defaults; images where the class is in the labels or a map): "
        "Road +5.0 (lower on 1 of 2), Water -10.0 (lower on 1 of 1)."
    ]


def test_a_flagged_analyst_variant_is_paired_with_the_same_polygons_without_the_flag_on_the_images_both_ran():
    def analyst(variant: str, gain: float, part: int) -> dict:
        result = run(variant, gain, 0.0, part=part)
        result["spec"]["analyst"] = {"polygons": 20, "placement": "classes", "seed": 0}
        return result

    base, flagged = "defaults, 20 polygons by classes", "defaults, 20 polygons by classes, anchor"
    runs = [analyst(base, 0.10, 1), analyst(base, -0.02, 2), analyst(base, 0.30, 3)]
    runs += [analyst(flagged, 0.04, 1), analyst(flagged, 0.01, 2)]
    runs += [run("defaults", -0.02, 0.0, part=1), run("defaults", 0.1, 0.0, part=2)]
    runs += [run("no anchor", 0.01, 0.0, part=2), analyst("defaults, 5 polygons by classes", 0.0, 3)]
    runs[-1]["spec"]["analyst"]["polygons"] = 5
    assert paired_lines(runs) == [
        f"- {flagged}, against the same polygons without `anchor`, on the 2 images both ran (checked): "
        "+2.50 against +4.00, worst +1.0 against -2.0, below -1 on 0 against 1, higher on 1, within 0.5 on 0.",
        "- no anchor, against the defaults, on the 1 images both ran (checked): +1.00 against +10.00, worst +1.0 "
        "against +10.0, below -1 on 0 against 0, higher on 0, within 0.5 on 0.",
        "- defaults, 5 polygons by classes, against 20 polygons, on the 1 images both ran (checked): +0.00 against "
        "+30.00, worst +0.0 against +30.0, below -1 on 0 against 0, higher on 0, within 0.5 on 0.",
    ]


def test_an_analyst_variant_names_its_seed_unless_it_is_0_so_seeds_never_share_a_name():
    drawn = {"polygons": 20, "placement": "classes", "seed": 0}
    assert analyst_variant(drawn, []) == "defaults, 20 polygons by classes"
    assert analyst_variant({**drawn, "seed": 1}, ["anchor"]) == "defaults, 20 polygons by classes, seed 1, anchor"
