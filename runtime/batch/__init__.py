"""``srdeploy batch``: image folders and videos on a Ray cluster, resumable and fault-tolerant.

The job's truth lives on disk, never only in driver memory, so retry and resume are the same code:

    OUTDIR/.srdeploy-batch/plan.json        settings + every task (id, kind, input, output), written
                                            once the workers are ready (a batch that never started
                                            leaves none, so the same command runs again)
    OUTDIR/.srdeploy-batch/tasks/ID.json    one task's state: done (output size and mtime) or failed
    OUTDIR/.srdeploy-batch/summary.json     the last run's report

Every task is idempotent: the same input gives the same output file, written atomically
(temporary name, then rename), so a task that ran half-way (worker SIGKILLed, driver killed) is
simply run again. ``--resume`` skips a task whose state says done *and* whose output still has the
recorded size and mtime; everything else runs again.

Modules (only ``driver`` imports ray, and only inside functions, so ``srdeploy.runtime`` still
imports where ray is not installed):

    job.py        inputs -> plan (tasks, output paths mirroring the input tree); job folder and states
    resources.py  how many workers fit: the local Ray instance sized to the machine, a cluster's nodes
    worker.py     ``BatchWorker``: the Ray actor body; opens the session once, runs tasks
    video.py      the video tasks (plan a video -> segments -> join and mux) on the ffmpeg segment layer
    driver.py     ``run_batch``: Ray start/attach, actors, scheduling, retries, progress, report
"""
