"""Benchmark suite of the FLUX provider: ``python -m benchmarks.run [--quick] [--only B1,B2]``.

* ``B1`` (:mod:`benchmarks.fleet`): N concurrent ``FluxTaskTrigger.run()`` in one event loop;
  CPU per poll against a bare-httpx floor and a naive client-per-poll trigger, loop lag, RSS.
* ``B2`` (:mod:`benchmarks.polling`): API calls per task and completion-notice delay of the
  adaptive default poll schedule against fixed 2 s and 10 s intervals.
* ``B3`` (:mod:`benchmarks.worker_slot`): worker-slot seconds per image, deferrable or not.
* ``B4`` (:mod:`benchmarks.mapped_batch`): 100 mapped generations on ``airflow standalone``.
* ``B5`` (:mod:`benchmarks.distributed_batch`): 1,000 mapped generations on a distributed
  Airflow, a triggerer SIGKILLed half way.
* ``B6`` (:mod:`benchmarks.batch_operator`): 1,000 images as one batch task (with and without a
  service limit of 24 in flight) beside 1,000 mapped operators and Airflow's floor.

Every figure is measured against a baseline taken in the same run (the machine is shared and
noisy); nothing here asserts timings. Results go to ``benchmarks/results/latest.json``.
"""
