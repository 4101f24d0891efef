/** Plain-text tables and CSV for the CLI; `--json` output bypasses these. */

type Cell = string | number | boolean | Date | null | undefined;

const text = (v: Cell): string =>
  v === null || v === undefined ? "-" : v instanceof Date ? v.toISOString() : String(v);

/** Left-aligned columns separated by two spaces, a header row in capitals. */
export function table(headers: string[], rows: Cell[][]): string {
  const cells = [headers.map((h) => h.toUpperCase()), ...rows.map((r) => r.map(text))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  return cells
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

/** RFC 4180: fields with a comma, quote or line break are quoted, quotes doubled. */
export function csv(headers: string[], rows: Cell[][]): string {
  const field = (v: Cell) => {
    const s = v === null || v === undefined ? "" : v instanceof Date ? v.toISOString() : String(v);
    return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
  };
  return [headers, ...rows].map((r) => r.map(field).join(",")).join("\r\n");
}
