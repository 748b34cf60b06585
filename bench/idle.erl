%% idle: the twin of idle.lua, the CPU time of an idle BEAM node, first
%% without distribution, then with it up (started without EPMD: bench/run
%% gives -erl_epmd_port and ERL_DIST_PORT).
-module(idle).
-export([main/0, main/1]).

main() -> main([]).

main(Args) ->
    Secs = bench:int_arg(Args, 1, 10),
    measure("idle_cpu", Secs),
    {ok, _} = net_kernel:start(['idle@127.0.0.1', longnames]),
    measure("idle_cpu_dist", Secs).

measure(Name, Secs) ->
    timer:sleep(1000),
    Ms0 = stat_ms(), Ns0 = threads_ns(),
    timer:sleep(Secs * 1000),
    Ms1 = stat_ms(), Ns1 = threads_ns(),
    Per = case Secs of 10 -> "10s"; _ -> integer_to_list(Secs) ++ "s" end,
    bench:report(Name, Ms1 - Ms0, "ms/" ++ Per, "lower"),
    bench:report(Name ++ "_ns", (Ns1 - Ns0) / 1.0e6, "ms/" ++ Per, "lower").

read(Path) ->
    {ok, Bin} = file:read_file(Path),
    binary_to_list(Bin).

%% utime + stime of the emulator, in milliseconds (10 ms clock ticks).
stat_ms() ->
    Stat = read("/proc/self/stat"),
    [_, Rest] = string:split(Stat, ") ", trailing),
    Fields = string:lexemes(Rest, " "),
    (list_to_integer(lists:nth(12, Fields)) +
     list_to_integer(lists:nth(13, Fields))) * 10.

%% The CPU time of every thread, in nanoseconds.
threads_ns() ->
    {ok, Tids} = file:list_dir("/proc/self/task"),
    lists:sum([begin
                   [Ns | _] = string:lexemes(read("/proc/self/task/" ++ T ++ "/schedstat"), " "),
                   list_to_integer(Ns)
               end || T <- Tids]).
