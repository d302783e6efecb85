//! The simulated provider (the local default): deterministic from a seed, stateless (the job
//! id carries everything), with configurable latency and failure, rejection and 429 rates.
//! Time is the caller's clock, so tests move it by hand.

use super::{mp4, JobRequest, JobState, ProviderConfigError, ProviderError, Video};
use sha2::{Digest, Sha256};

#[derive(Clone, Debug)]
pub struct Simulated {
    pub seed: u64,
    pub latency_ms: i64,
    pub fail_rate: f64,
    pub reject_rate: f64,
    pub throttle_rate: f64,
    /// Every call answers 503: a provider outage.
    pub outage: bool,
}

impl Default for Simulated {
    fn default() -> Self {
        Simulated {
            seed: 42,
            latency_ms: 3_000,
            fail_rate: 0.05,
            reject_rate: 0.02,
            throttle_rate: 0.05,
            outage: false,
        }
    }
}

fn rate(
    get: &dyn Fn(&str) -> Option<String>,
    name: &str,
    default: f64,
) -> Result<f64, ProviderConfigError> {
    match get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| {
                ProviderConfigError::Invalid(name.into(), "a number from 0 to 1".into())
            }),
    }
}

impl Simulated {
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, ProviderConfigError> {
        let d = Simulated::default();
        let int = |name: &str, default: i64| -> Result<i64, ProviderConfigError> {
            get(name).map_or(Ok(default), |v| {
                v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    ProviderConfigError::Invalid(name.into(), "a whole number".into())
                })
            })
        };
        Ok(Simulated {
            seed: int("SIM_SEED", d.seed as i64)? as u64,
            latency_ms: int("SIM_LATENCY_MS", d.latency_ms)?,
            fail_rate: rate(get, "SIM_FAIL_RATE", d.fail_rate)?,
            reject_rate: rate(get, "SIM_REJECT_RATE", d.reject_rate)?,
            throttle_rate: rate(get, "SIM_THROTTLE_RATE", d.throttle_rate)?,
            outage: get("SIM_OUTAGE").is_some_and(|v| v == "true"),
        })
    }

    /// A uniform number in [0, 1) from the seed and the parts.
    fn draw(&self, parts: &[&str]) -> f64 {
        let mut h = Sha256::new();
        h.update(self.seed.to_be_bytes());
        for p in parts {
            h.update(p.as_bytes());
            h.update([0]);
        }
        let d = h.finalize();
        let n = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        (n >> 11) as f64 / (1u64 << 53) as f64
    }

    fn outage_error() -> ProviderError {
        ProviderError::Retryable {
            retry_after_secs: Some(5),
            message: "503 simulated outage".into(),
        }
    }

    pub fn submit(&self, req: &JobRequest) -> Result<String, ProviderError> {
        if self.outage {
            return Err(Self::outage_error());
        }
        if self.draw(&[&req.task_id, "throttle", &req.attempt.to_string()]) < self.throttle_rate {
            return Err(ProviderError::Retryable {
                retry_after_secs: Some(2),
                message: "429 simulated rate limit".into(),
            });
        }
        // Latency varies from half to one and a half times the setting, per task.
        let latency =
            (self.latency_ms as f64 * (0.5 + self.draw(&[&req.task_id, "latency"]))) as i64;
        Ok(format!(
            "sim.{}.{}.{}.{}",
            req.task_id,
            req.now_ms + latency,
            req.duration_seconds,
            req.attempt
        ))
    }

    pub fn poll(&self, job_id: &str, now_ms: i64) -> Result<JobState, ProviderError> {
        if self.outage {
            return Err(Self::outage_error());
        }
        let mut parts = job_id.split('.');
        let (Some("sim"), Some(task_id), Some(ready), Some(duration)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ProviderError::Permanent {
                code: "not_found".into(),
                message: format!("no job {job_id}"),
            });
        };
        let (Ok(ready_ms), Ok(duration)) = (ready.parse::<i64>(), duration.parse::<u32>()) else {
            return Err(ProviderError::Permanent {
                code: "not_found".into(),
                message: format!("no job {job_id}"),
            });
        };
        if now_ms < ready_ms {
            return Ok(JobState::Running { progress: None });
        }
        let roll = self.draw(&[task_id, "outcome"]);
        if roll < self.fail_rate {
            return Ok(JobState::Failed {
                code: "model_error".into(),
                message: "simulated generation failure".into(),
            });
        }
        if roll < self.fail_rate + self.reject_rate {
            return Ok(JobState::Rejected {
                reason: "simulated content policy violation".into(),
            });
        }
        let seed = (self.draw(&[task_id, "bytes"]) * u64::MAX as f64) as u64;
        Ok(JobState::Succeeded(Video::Bytes(mp4::tiny_mp4(
            duration, seed,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(task: &str, attempt: u32) -> JobRequest {
        JobRequest {
            task_id: task.into(),
            provider_model: "sora-2".into(),
            prompt: "p".into(),
            duration_seconds: 4,
            aspect_ratio: "16:9".into(),
            resolution: "720p".into(),
            attempt,
            now_ms: 1_000,
            idempotency_key: None,
        }
    }

    #[test]
    fn deterministic_rates_and_latency() {
        let sim = Simulated {
            throttle_rate: 0.0,
            fail_rate: 0.2,
            reject_rate: 0.1,
            ..Default::default()
        };
        let mut outcomes = std::collections::HashMap::new();
        for i in 0..1_000 {
            let job = sim.submit(&req(&format!("t{i}"), 0)).unwrap_or_default();
            assert_eq!(
                sim.poll(&job, 1_000),
                Ok(JobState::Running { progress: None })
            );
            let state = sim.poll(&job, 1_000_000);
            assert_eq!(state, sim.poll(&job, 1_000_000), "same answer every time");
            let k = match state {
                Ok(JobState::Succeeded(_)) => "ok",
                Ok(JobState::Failed { .. }) => "failed",
                Ok(JobState::Rejected { .. }) => "rejected",
                _ => "other",
            };
            *outcomes.entry(k).or_insert(0) += 1;
        }
        let failed = outcomes.get("failed").copied().unwrap_or(0);
        let rejected = outcomes.get("rejected").copied().unwrap_or(0);
        assert!((150..250).contains(&failed), "{outcomes:?}");
        assert!((60..140).contains(&rejected), "{outcomes:?}");
        assert_eq!(outcomes.get("other"), None);
    }

    #[test]
    fn outage_and_throttling_are_retryable() {
        let down = Simulated {
            outage: true,
            ..Default::default()
        };
        assert!(matches!(
            down.submit(&req("t", 0)),
            Err(ProviderError::Retryable { .. })
        ));
        let busy = Simulated {
            throttle_rate: 1.0,
            ..Default::default()
        };
        assert!(matches!(
            busy.submit(&req("t", 0)),
            Err(ProviderError::Retryable {
                retry_after_secs: Some(2),
                ..
            })
        ));
        assert!(matches!(
            busy.poll("garbage", 0),
            Err(ProviderError::Permanent { .. })
        ));
    }
}
