%% Helpers shared by the Erlang side of the benchmarks, the twins of
%% bench.lua: a wall clock, the resident set size, and the result lines
%% that bench/run reads.
-module(bench).
-export([now/0, rss/0, report/4, note/2, percentile/2, int_arg/3]).

%% Monotonic wall clock in seconds.
now() ->
    erlang:monotonic_time(nanosecond) / 1.0e9.

%% Resident set size of the emulator, in bytes.
rss() ->
    {ok, Status} = file:read_file("/proc/self/status"),
    {match, [Kb]} = re:run(Status, "VmRSS:\\s*(\\d+) kB",
                           [{capture, all_but_first, list}]),
    list_to_integer(Kb) * 1024.

%% One figure, in the format of bench.lua's report.
report(Name, Value, Unit, Better) ->
    io:format("RESULT ~s ~s ~s ~s~n", [Name, fmt(Value), Unit, Better]).

note(Fmt, Args) ->
    io:format("# " ++ Fmt ++ "~n", Args).

%% The P-th percentile (0..100) of a sorted list, nearest rank.
percentile(Sorted, P) ->
    I = max(1, ceil(length(Sorted) * P / 100)),
    lists:nth(I, Sorted).

%% The N-th command-line argument as an integer, or Default.
int_arg(Args, N, _Default) when length(Args) >= N ->
    list_to_integer(lists:nth(N, Args));
int_arg(_, _, Default) ->
    Default.

fmt(V) when is_integer(V) -> integer_to_list(V);
fmt(V) -> io_lib:format("~.3f", [float(V)]).
