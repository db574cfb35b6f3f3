//! One page of a list endpoint: `{"data": [...], "has_more": bool}`.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
}

/// `rows` were read with `limit + 1`: the extra row, if any, says there is more.
pub(crate) fn page<T>(mut rows: Vec<T>, limit: u32) -> Page<T> {
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    Page {
        data: rows,
        has_more,
    }
}
