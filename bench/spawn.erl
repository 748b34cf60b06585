%% spawn: what a process costs; the twin of spawn.lua.
%%   erl -noshell -run spawn main [N] -s init stop
-module(spawn).
-export([main/0, main/1]).

-define(BATCH, 1000).

main() -> main([]).

main(Args) ->
    N = bench:int_arg(Args, 1, 100000),
    Me = self(),
    erlang:garbage_collect(),
    Rss0 = bench:rss(),
    Procs0 = erlang:memory(processes),
    T0 = bench:now(),
    InSpawn = batches(N, Me, 0.0),
    Elapsed = bench:now() - T0,
    erlang:garbage_collect(),
    Rss1 = bench:rss(),
    Procs1 = erlang:memory(processes),
    bench:note("~b idle processes, ~b alive", [N, erlang:system_info(process_count)]),
    bench:report("spawn_until_ready", Elapsed / N * 1.0e9, "ns/proc", "lower"),
    bench:report("spawn_call_only", InSpawn / N * 1.0e9, "ns/proc", "lower"),
    bench:report("rss_per_idle_proc", (Rss1 - Rss0) / N, "B/proc", "lower"),
    bench:report("heap_per_idle_proc", (Procs1 - Procs0) / N, "B/proc", "lower"),
    bench:report("rss_total", Rss1 / (1 bsl 20), "MiB", "lower"),
    bench:report("elapsed", Elapsed, "s", "lower").

%% Spawn N processes, BATCH at a time, waiting for each batch to be ready.
%% Returns the time spent in spawn itself.
batches(0, _, InSpawn) ->
    InSpawn;
batches(N, Me, InSpawn) ->
    Count = min(?BATCH, N),
    S = bench:now(),
    spawn_n(Count, Me),
    Spent = bench:now() - S,
    await(Count),
    batches(N - Count, Me, InSpawn + Spent).

spawn_n(0, _) -> ok;
spawn_n(K, Me) ->
    spawn(fun() -> idle(Me) end),
    spawn_n(K - 1, Me).

idle(Parent) ->
    Parent ! ready,
    receive stop -> ok end.

await(0) -> ok;
await(K) -> receive ready -> await(K - 1) end.
