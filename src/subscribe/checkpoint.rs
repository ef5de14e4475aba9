//! Named consumer checkpoints, stored in the log itself: checkpoint `NAME` is the system
//! stream `$checkpoint-NAME`, whose last event holds the resume token as text. So a
//! checkpoint is as durable as an append (under `Sync`, on disk when `save_checkpoint`
//! returns), recovered by the same rule, and read back with one index lookup.

use crate::error::{Error, Result};
use crate::store::{EventRef, ExpectedVersion, ResumeToken, Store};

/// Prefix of the system streams holding named checkpoints.
pub const CHECKPOINT_STREAM_PREFIX: &str = "$checkpoint-";
/// Event type of a checkpoint record.
const CHECKPOINT_EVENT_TYPE: &str = "$checkpoint";

fn stream_of(name: &str) -> Result<String> {
    if name.is_empty() {
        return Err(Error::InvalidArgument(
            "a checkpoint name must not be empty".into(),
        ));
    }
    Ok(format!("{CHECKPOINT_STREAM_PREFIX}{name}"))
}

impl Store {
    /// The resume token last saved under `name`, if any.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty name; [`Error::Corrupted`] when the stored
    /// record is not a token; I/O errors.
    pub fn checkpoint(&self, name: &str) -> Result<Option<ResumeToken>> {
        let stream = stream_of(name)?;
        let Some(last) = self.read_stream_backward(&stream, None)?.next() else {
            return Ok(None);
        };
        let e = last?;
        let text = std::str::from_utf8(&e.data).ok();
        text.and_then(|t| t.parse().ok()).map(Some).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "checkpoint {name:?} holds {:?}, not a resume token",
                String::from_utf8_lossy(&e.data)
            ))
        })
    }

    /// Saves `token` under `name` (durably under `Sync` when this returns). Each save
    /// appends one small record to the system stream `$checkpoint-NAME`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty name; as [`Store::append`].
    pub fn save_checkpoint(&self, name: &str, token: ResumeToken) -> Result<()> {
        let stream = stream_of(name)?;
        let text = token.to_string();
        self.append_any_stream(
            &stream,
            ExpectedVersion::Any,
            &[EventRef::new(CHECKPOINT_EVENT_TYPE, text.as_bytes())],
        )?;
        Ok(())
    }
}
