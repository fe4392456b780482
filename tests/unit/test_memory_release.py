"""runtime.memory: the allocators' free pages go back once per load, when the work stops moving."""

import asyncio

from runtime import memory


def test_release_once_per_load_when_the_work_stops():
    async def scenario() -> list[int]:
        work = [0]
        released: list[int] = []

        async def release() -> None:
            released.append(work[0])

        stop = asyncio.Event()
        task = asyncio.create_task(memory.release_when_idle(lambda: work[0], stop, release, idle_s=0.05))
        await asyncio.sleep(0.2)  # idle from the start: no load, nothing to give back
        assert released == []
        for _ in range(6):  # a load: the count moves in every window
            work[0] += 10
            await asyncio.sleep(0.03)
        await asyncio.sleep(0.3)  # it stopped: released once, not again while it stays still
        assert released == [60]
        work[0] += 1  # a second, short load
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(task, 1)
        return released

    assert asyncio.run(scenario()) == [60, 61]


def test_trim_heap_runs():
    memory.trim_heap()  # glibc: malloc_trim; elsewhere nothing. Either way no error.
