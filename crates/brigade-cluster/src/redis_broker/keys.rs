//! Key names, and the queue named in a URL.

use crate::broker::BrokerError;
use crate::codec::{ClientId, TaskId};

/// A queue name becomes part of every key, inside the hash tag's braces.
pub(super) fn check_queue_name(queue: &str) -> Result<(), BrokerError> {
    let ok = !queue.is_empty()
        && queue.len() <= 200
        && queue
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(BrokerError::Config(format!(
            "bad queue name `{queue}`: use 1 to 200 of A-Z a-z 0-9 - _ . :"
        )))
    }
}

/// Splits `queue=NAME` out of a URL's query: the URL without it, and the name.
pub(super) fn split_queue(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut queue = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("queue=") {
            Some(q) => {
                queue = Some(q.to_owned());
                false
            }
            None => !pair.is_empty(),
        })
        .collect();
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, queue)
}

/// The queue's key names.
pub(super) struct Keys {
    pub(super) queue: String,
    pub(super) prefix: String,
    pub(super) tasks: String,
    pub(super) dead: String,
    pub(super) delayed: String,
    pub(super) lasterr: String,
}

impl Keys {
    pub(super) fn new(queue: &str) -> Self {
        let prefix = format!("brigade:{{{queue}}}:");
        Self {
            queue: queue.to_owned(),
            tasks: format!("{prefix}tasks"),
            dead: format!("{prefix}dead"),
            delayed: format!("{prefix}delayed"),
            lasterr: format!("{prefix}lasterr"),
            prefix,
        }
    }

    pub(super) fn result(&self, id: TaskId) -> String {
        format!("{}r:{id}", self.prefix)
    }

    pub(super) fn cancel(&self, id: TaskId) -> String {
        format!("{}x:{id}", self.prefix)
    }

    pub(super) fn reply(&self, client: ClientId) -> String {
        format!("{}reply:{client}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_comes_out_of_the_query() {
        assert_eq!(
            split_queue("redis://h:1/0?queue=jobs"),
            ("redis://h:1/0".to_owned(), Some("jobs".to_owned()))
        );
        assert_eq!(
            split_queue("redis://h:1/0?protocol=resp3&queue=jobs"),
            (
                "redis://h:1/0?protocol=resp3".to_owned(),
                Some("jobs".to_owned())
            )
        );
        assert_eq!(split_queue("redis://h"), ("redis://h".to_owned(), None));
    }

    #[test]
    fn queue_names_stay_inside_the_hash_tag() {
        assert!(check_queue_name("jobs.v2:eu-1_x").is_ok());
        for bad in ["", "a b", "a{b", "a}b", &"x".repeat(201)] {
            assert!(check_queue_name(bad).is_err(), "{bad:?}");
        }
        let k = Keys::new("jobs");
        assert_eq!(k.tasks, "brigade:{jobs}:tasks");
        let id = TaskId {
            client: ClientId(1),
            seq: 2,
        };
        assert_eq!(k.result(id), "brigade:{jobs}:r:0000000000000001-2");
        assert_eq!(
            k.reply(ClientId(1)),
            "brigade:{jobs}:reply:0000000000000001"
        );
    }
}
