//! Plain-text tables for the commands that list things: each column as wide as its widest
//! cell, columns two spaces apart, no trailing spaces.

/// A table being filled row by row.
#[derive(Debug)]
pub(crate) struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    pub(crate) fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra ones are dropped.
    pub(crate) fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// The header line and every row, each ending with a newline.
    pub(crate) fn render(&self) -> String {
        let width = |i: usize| {
            let cells = self.rows.iter().map(|r| r[i].chars().count());
            cells.fold(self.headers[i].chars().count(), usize::max)
        };
        let widths: Vec<usize> = (0..self.headers.len()).map(width).collect();
        let header = self.headers.iter().map(|h| (*h).to_owned()).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (cell, width) in row.iter().zip(&widths) {
                line.push_str(&format!("{cell:<width$}  "));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_the_widest_cell_and_lines_have_no_trailing_spaces() {
        let mut table = Table::new(&["NAME", "WEIGHT", "NOTE"]);
        table.row(vec!["catalog-v1".into(), "90".into(), String::new()]);
        table.row(vec![
            "√ ok".into(),
            "10".into(),
            "canary".into(),
            "extra".into(),
        ]);
        table.row(vec!["x".into()]);
        assert_eq!(
            table.render(),
            "NAME        WEIGHT  NOTE\n\
             catalog-v1  90\n\
             √ ok        10      canary\n\
             x\n"
        );
    }
}
