//! `streamlog tail`: follow a store's events as they commit, in this process or written by
//! another, one JSON object per event with its resume token.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use streamlog::{Delivery, Filter, ResumeToken, SubscribeAll};

use crate::output::{self, line};
use crate::{CliError, CliResult, open_read_only, refused};

/// Events printed between two checkpoint saves at most (and at every pause and at exit).
const SAVE_EVERY: u64 = 1000;

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Store directory.
    dir: PathBuf,
    /// Only this stream's events.
    #[arg(long, value_name = "S", conflicts_with = "stream_prefix")]
    stream: Option<String>,
    /// Only events of streams whose name starts with P.
    #[arg(long, value_name = "P")]
    stream_prefix: Option<String>,
    /// Only events of this type (repeat for several).
    #[arg(long = "type", value_name = "T")]
    types: Vec<String>,
    /// Only events whose type matches this regular expression (look-around allowed).
    #[arg(long, value_name = "R")]
    type_regex: Option<String>,
    /// Where to start: start, end, or a resume token printed by an earlier run
    /// (default: end; with --checkpoint, the checkpoint's token, or the start when it was
    /// never saved).
    #[arg(long, value_name = "start|end|TOKEN")]
    from: Option<String>,
    /// Resume from this named checkpoint and save it as events are printed (at least once:
    /// after a crash, events printed since the last save are printed again).
    #[arg(long, value_name = "NAME")]
    checkpoint: Option<String>,
    /// Stop after N events.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
}

impl TailArgs {
    fn filter(&self) -> CliResult<Option<Filter>> {
        let mut all = Vec::new();
        if let Some(s) = &self.stream {
            all.push(Filter::streams([s.clone()]));
        }
        if let Some(p) = &self.stream_prefix {
            all.push(Filter::stream_prefix(p.clone()));
        }
        if !self.types.is_empty() {
            all.push(Filter::event_types(self.types.clone()));
        }
        if let Some(r) = &self.type_regex {
            all.push(Filter::event_type_regex(r).map_err(refused)?);
        }
        Ok((!all.is_empty()).then(|| Filter::all_of(all)))
    }
}

pub fn run(a: TailArgs, out: &mut impl Write) -> CliResult {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| CliError::Other(format!("cannot handle signal {signal}: {e}")))?;
    }
    let filter = a.filter()?;
    let store = open_read_only(&a.dir)?;
    if let Some(s) = &a.stream {
        if s.is_empty() {
            return Err(CliError::Usage(
                "--stream: a stream name is not empty".into(),
            ));
        }
        // A hard-deleted stream has no events to come: exit 7 as `read` does, instead of
        // waiting for ever.
        store.stream_version(s).map_err(refused)?;
    }
    let saved = match &a.checkpoint {
        Some(name) => store.checkpoint(name).map_err(refused)?,
        None => None,
    };
    let options = match (a.from.as_deref(), saved) {
        (Some("start"), _) => SubscribeAll::from_start(),
        (Some("end"), _) => SubscribeAll::from_end(),
        (Some(token), _) => {
            let token = token
                .parse::<ResumeToken>()
                .map_err(|e| CliError::Usage(format!("--from: {e}")))?;
            // As for `read-all --from`: a position that is not there yet is a mistyped
            // token, and waiting from there would pass over every event before it.
            let head = store.head();
            if token.position > head {
                return Err(CliError::Usage(format!(
                    "--from: position {} is past the end of the log ({})",
                    token.position.0, head.0
                )));
            }
            SubscribeAll::from(token)
        }
        (None, Some(token)) => SubscribeAll::from(token),
        // A checkpoint not saved yet: from the start, so that nothing is missed.
        (None, None) if a.checkpoint.is_some() => SubscribeAll::from_start(),
        (None, None) => SubscribeAll::from_end(),
    };
    let options = match filter {
        Some(f) => options.filter(f),
        None => options,
    };
    let mut sub = store.subscribe_all(options).map_err(refused)?;
    let limit = a.limit.unwrap_or(u64::MAX);
    let mut printed = 0u64;
    let mut unsaved: Option<ResumeToken> = None;
    let mut since_save = 0u64;
    let save = |token: &mut Option<ResumeToken>| -> CliResult {
        if let (Some(name), Some(t)) = (&a.checkpoint, token.take()) {
            store.save_checkpoint(name, t)?;
        }
        Ok(())
    };
    while printed < limit && !stop.load(Ordering::Relaxed) {
        match sub.next_timeout(Duration::from_millis(100))? {
            Some(Delivery::Event(e)) => {
                let token = e.resume_token();
                line(out, output::event(&e).field("resume", token.to_string()))?;
                out.flush()?;
                printed += 1;
                since_save += 1;
                unsaved = Some(token);
                if since_save >= SAVE_EVERY {
                    since_save = 0;
                    save(&mut unsaved)?;
                }
            }
            Some(Delivery::Checkpoint(token)) => unsaved = Some(token),
            Some(_) => {}
            // A pause: a good moment to save.
            None => save(&mut unsaved)?,
        }
    }
    save(&mut unsaved)?;
    Ok(())
}
