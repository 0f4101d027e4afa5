//! Routes at run time: the `[[routes]]` compiled ([`Routes`]), each route's `chats` (the
//! configured ones with those set through the API, [`chats`]), the engine that decides each
//! run's next step ([`engine`]), what starts runs ([`trigger`]: a mail, an API call) and what
//! answers a wait ([`press`]: a Telegram button press, an API signal, the wait's timer).
//!
//! The store keeps runs, their waits and their messages and applies every change in one
//! transaction (`docs/ROUTES.md`); this module only decides. A step is ordinary messages on the
//! queue, tagged with the run and the step, so the dispatcher delivers them under the
//! destination's policies and calls back here when one ends ([`engine::step_delivered`],
//! [`engine::step_dead`]): the step's output joins the context and the next step is decided and
//! applied with the message's end, in one transaction. Messages to
//! [`TIMER_DESTINATION`](ferrule_store::TIMER_DESTINATION) are not delivered anywhere: they
//! expire their wait ([`press::timer`]).

pub mod chats;
pub mod engine;
pub mod press;
pub mod trigger;

use std::collections::BTreeMap;

use ferrule_policy::retry::Retry;
use ferrule_policy::{ConfigError, Context, SharedClock};

use crate::config::{Config, RouteConfig, StepConfig};
use crate::template::Templates;

/// One route, ready to run.
#[derive(Debug)]
pub struct Route {
    /// Its position in `[[routes]]`, which names its template fields.
    pub index: usize,
    /// As configured.
    pub config: RouteConfig,
    /// `[[routes.chats]]` with the entries set through the API over them: the object
    /// templates read as `chats`.
    pub chats: chats::Chats,
    /// The retry policy of each step with a `retry` table of its own.
    pub retries: BTreeMap<String, Retry>,
}

impl Route {
    /// The step named `name`, with its position.
    pub fn step(&self, name: &str) -> Option<(usize, &StepConfig)> {
        self.config
            .steps
            .iter()
            .enumerate()
            .find(|(_, s)| s.name == name)
    }

    /// The field prefix of step `i`'s templates.
    pub fn field(&self, i: usize, field: &str) -> String {
        format!("routes[{}].steps[{i}].{field}", self.index)
    }
}

/// Every configured route with its compiled templates.
#[derive(Debug)]
pub struct Routes {
    /// The templates of every route.
    pub templates: Templates,
    routes: BTreeMap<String, Route>,
    /// Orders this relay's writes of the routes' chats and its reads of them from the store,
    /// so a read taken just before a write never undoes it.
    chat_writes: tokio::sync::Mutex<()>,
}

impl Routes {
    /// Compiles the routes of a validated `config`; step retry policies time on `clock`.
    pub fn compile(config: &Config, clock: SharedClock) -> Result<Routes, ConfigError> {
        let templates = Templates::compile(&config.routes)?;
        let mut routes = BTreeMap::new();
        for (r, route) in config.routes.iter().enumerate() {
            let mut retries = BTreeMap::new();
            for (s, step) in route.steps.iter().enumerate() {
                if let Some(retry) = config.step_retry(r, s)? {
                    let ctx = Context::new(format!("route.{}.{}", route.name, step.name))
                        .with_clock(clock.clone());
                    let retry = Retry::with_context(retry, ctx)
                        .map_err(|e| e.within(&format!("routes[{r}].steps[{s}].retry")))?;
                    retries.insert(step.name.clone(), retry);
                }
            }
            routes.insert(
                route.name.clone(),
                Route {
                    index: r,
                    config: route.clone(),
                    chats: chats::Chats::configured(&route.chats),
                    retries,
                },
            );
        }
        Ok(Routes {
            templates,
            routes,
            chat_writes: tokio::sync::Mutex::new(()),
        })
    }

    /// The route named `name`.
    pub fn get(&self, name: &str) -> Option<&Route> {
        self.routes.get(name)
    }

    /// Every route, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.values()
    }

    /// Whether no route is configured.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}
