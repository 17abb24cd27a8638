"""The tables `make bench` prints (GitHub Markdown, as the README holds them)."""
from __future__ import annotations


def print_table(rows: list[dict], hf: dict[int, float]) -> None:
    print("| streams | sluice tok/s | first token p50 / p99 ms | per-token p50 / p99 ms | HF generate() tok/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        base = hf.get(r["streams"])
        print(f"| {r['streams']} | {r['tok_s']:.0f} | {r['ttft_p50_ms']:.0f} / {r['ttft_p99_ms']:.0f} | "
              f"{r['itl_p50_ms']:.1f} / {r['itl_p99_ms']:.1f} | "
              f"{f'{base:.0f}' if base else '-'} |")


def print_constrained(rows: list[dict], mixed: list[dict]) -> None:
    """Each pair ran back to back, every stream to max_new_tokens."""
    print("\n| streams | constrained | unconstrained streams' per-token p50 / p99 ms "
          "(all unconstrained: p50 / p99) | constrained streams' per-token p50 / p99 ms | tok/s (all unconstrained) |")
    print("|---|---|---|---|---|")
    for plain, both in zip(rows, mixed):
        free, held = both["unconstrained"], both["constrained"]
        print(f"| {both['streams']} | {held['streams']} | {free['itl_p50_ms']:.1f} / {free['itl_p99_ms']:.1f} "
              f"({plain['itl_p50_ms']:.1f} / {plain['itl_p99_ms']:.1f}) | "
              f"{held['itl_p50_ms']:.1f} / {held['itl_p99_ms']:.1f} | {both['tok_s']:.0f} ({plain['tok_s']:.0f}) |")


def print_contention(rows: list[dict], busy: list[dict], count: int, name: str = "sluice") -> None:
    print(f"\n| streams | {name} tok/s quiet | with {count} busy loop(s) | contended / quiet | "
          "per-token p50 ms quiet / contended | first token p50 ms quiet / contended |")
    print("|---|---|---|---|---|---|")
    for quiet, loaded in zip(rows, busy):
        print(f"| {quiet['streams']} | {quiet['tok_s']:.0f} | {loaded['tok_s']:.0f} | "
              f"{loaded['tok_s'] / quiet['tok_s']:.2f} | {quiet['itl_p50_ms']:.1f} / "
              f"{loaded['itl_p50_ms']:.1f} | {quiet['ttft_p50_ms']:.0f} / {loaded['ttft_p50_ms']:.0f} |")


def print_ratios(rows: list[dict], other: list[dict], name: str) -> None:
    print(f"\n| streams | {name} tok/s | sluice / {name} tok/s | {name} per-token p50 ms | "
          f"{name} first token p50 ms |")
    print("|---|---|---|---|---|")
    for mine, theirs in zip(rows, other):
        print(f"| {mine['streams']} | {theirs['tok_s']:.0f} | {mine['tok_s'] / theirs['tok_s']:.2f}x | "
              f"{theirs['itl_p50_ms']:.1f} | {theirs['ttft_p50_ms']:.0f} |")
