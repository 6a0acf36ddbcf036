"""Users' own code on the shared limiter (issue 13.2): `ctx.llm(name)` in a task returns an
openai-SDK-shaped client whose chat and embeddings calls reserve from the platform's buckets
(so they and the built-in kinds together keep under the limit), answer deterministic requests
from the shared cache, and return the SDK's types; and the `embed` kind batches its inputs
into as few calls as the limits allow."""

from __future__ import annotations

from openai.types.chat import ChatCompletion

from jobqueue import JobSpec
from jobqueue.tasks import Registry
from tests.support.helpers import platform, wait_finished


def user_tasks() -> Registry:
    reg = Registry()

    async def lesson(payload, ctx):
        llm = ctx.llm("sim")
        answer = await llm.chat.completions.create(
            messages=[{"role": "user", "content": payload["topic"]}], max_tokens=8,
            temperature=payload.get("temperature", 1))
        assert isinstance(answer, ChatCompletion)
        vectors = await llm.embeddings.create(input=[payload["topic"], "other"])
        return {"text": answer.choices[0].message.content, "model": answer.model,
                "dims": [len(d.embedding) for d in vectors.data]}

    reg.register("lesson", lesson)
    return reg


class TestUsersOwnCode:
    def test_a_users_task_calls_through_the_shared_limiter_and_cache(
            self, client, sim, platform_worker, sql):
        # A call timed out on a busy machine would be made again (and counted twice).
        plat = platform(sim, rpm=6000, timeout=30.0)
        # A worker of the user's queue whose runtime for the platform serves ctx.llm().
        platform_worker(plat, queue="lessons", tasks=user_tasks())
        ids = client.enqueue_many([JobSpec("lesson", {"topic": f"topic {i}"}, queue="lessons")
                                   for i in range(10)])
        same = client.enqueue_many([JobSpec("lesson", {"topic": "fixed", "temperature": 0},
                                            queue="lessons") for _ in range(5)])
        jobs = wait_finished(client, ids + same, timeout=30)
        assert all(j.state == "succeeded" for j in jobs), [j.errors for j in jobs]
        assert all(j.result["dims"] == [8, 8] for j in jobs)
        stats = sim.stats()
        # 10 + 1 chat calls: the 5 deterministic ones share one (the cache); and every call,
        # chat or embeddings, reserved from the shared buckets first. (Embeddings: one per
        # attempt, so 15, or more if a busy machine made an attempt fail and run again.)
        assert stats["models"]["sim-main"]["ok"] == 10 + 1
        assert stats["models"]["text-embedding-3-small"]["ok"] >= 15
        reserved = sum(r["requests_total"] for r in sql(
            "SELECT requests_total FROM jobqueue.rate_buckets"))
        assert reserved == stats["totals"]["ok"]


class TestEmbedKind:
    def test_embed_batches_inputs_within_the_token_bucket(self, client, sim, platform_worker):
        # 60,000 TPM and 1 s of burst: a call may hold at most 1,000 tokens; each input is
        # 100 characters = 25 tokens, so at most 40 inputs per call (embed_batch: 64).
        platform_worker(platform(sim, tpm=60_000, burst_seconds=1.0, embed_batch=64))
        texts = [f"{i:03d} " + "x" * 96 for i in range(100)]
        job_id = client.enqueue("embed", {"input": texts}, queue="sim")
        (job,) = wait_finished(client, [job_id], timeout=30)
        assert job.state == "succeeded", job.errors
        r = job.result
        assert len(r["embeddings"]) == 100 and all(len(v) == 8 for v in r["embeddings"])
        assert r["calls"] == 3  # 40 + 40 + 20
        assert r["usage"]["total_tokens"] == 100 * 25
        again = wait_finished(client, [client.enqueue("embed", {"input": texts[:1]},
                                                      queue="sim")])[0]
        assert again.result["embeddings"][0] == r["embeddings"][0]  # deterministic vectors

    def test_a_bad_embed_payload_is_dead_at_once(self, client, sim, platform_worker):
        platform_worker(platform(sim))
        job_id = client.enqueue("embed", {"input": ["ok", ""]}, queue="sim")
        (job,) = wait_finished(client, [job_id])
        assert (job.state, job.attempts) == ("dead", 1)
        assert "payload.input[1]: must be a non-empty string" in job.errors[0]["message"]
