//! The terminal's tables (`trace show`): columns sized to their content,
//! two spaces apart, each aligned left or right, with no borders and no
//! trailing spaces (comfy-table, told so).

use comfy_table::presets::NOTHING;
use comfy_table::{CellAlignment, ContentArrangement, Table};

/// How a column's cells are aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    /// To the left (names).
    Left,
    /// To the right (numbers).
    Right,
}

/// The table of `rows` under `header`, each line ending in a newline.
pub(crate) fn render(header: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(|(name, _)| *name));
    for row in rows {
        table.add_row(row);
    }
    let last = header.len().saturating_sub(1);
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if i == last { 0 } else { 2 }));
        column.set_cell_alignment(match header.get(i).map(|(_, a)| *a) {
            Some(Align::Right) => CellAlignment::Right,
            _ => CellAlignment::Left,
        });
    }
    let mut out = table.trim_fmt();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_widest_cell_two_spaces_apart() {
        let out = render(
            &[
                ("span", Align::Left),
                ("dur ms", Align::Right),
                ("bar", Align::Left),
            ],
            &[
                vec!["a".into(), "1.000".into(), "█··".into()],
                vec!["  deeper".into(), "12.500".into(), "·█·  note".into()],
            ],
        );
        assert_eq!(
            out,
            "span      dur ms  bar\n\
             a          1.000  █··\n  \
             deeper  12.500  ·█·  note\n"
        );
    }
}
