%% The client of the socket benchmarks (bench/sockets), the same for the
%% moonbeam and the Erlang servers.
%%   erl -noshell -pa DIR -run sock_client main echo PORT [CONNS ROUNDS]
%%     CONNS connections (100), each doing ROUNDS round trips of 64 bytes
%%     (2000); reports round trips per second and the 99th percentile.
%%   erl -noshell -pa DIR -run sock_client main idle PORT [CONNS]
%%     opens CONNS connections (10000), does one round trip on each, prints
%%     "READY", and holds them until its input ends.
-module(sock_client).
-export([main/1]).

main(["echo", Port | Rest]) ->
    Conns = bench:int_arg(Rest, 1, 100),
    Rounds = bench:int_arg(Rest, 2, 2000),
    P = list_to_integer(Port),
    Me = self(),
    Msg = binary:copy(<<"x">>, 64),
    T0 = bench:now(),
    [spawn_link(fun() -> Me ! {lat, echo_conn(P, Msg, Rounds)} end)
     || _ <- lists:seq(1, Conns)],
    Lats = lists:append([receive {lat, L} -> L end || _ <- lists:seq(1, Conns)]),
    Elapsed = bench:now() - T0,
    Sorted = lists:sort(Lats),
    bench:note("~b connections x ~b round trips of 64 bytes", [Conns, Rounds]),
    bench:report("round_trips", Conns * Rounds / Elapsed, "rt/s", "higher"),
    bench:report("p99", bench:percentile(Sorted, 99), "us", "lower"),
    halt(0);
main(["idle", Port | Rest]) ->
    Conns = bench:int_arg(Rest, 1, 10000),
    P = list_to_integer(Port),
    Socks = [idle_conn(P) || _ <- lists:seq(1, Conns)],
    io:format("READY ~b~n", [length(Socks)]),
    eof = wait_eof(),
    halt(0).

echo_conn(Port, Msg, Rounds) ->
    {ok, S} = gen_tcp:connect({127,0,0,1}, Port,
                              [binary, {active, false}, {nodelay, true}]),
    Lats = [round_trip(S, Msg) || _ <- lists:seq(1, Rounds)],
    gen_tcp:close(S),
    Lats.

round_trip(S, Msg) ->
    T0 = erlang:monotonic_time(microsecond),
    ok = gen_tcp:send(S, Msg),
    {ok, _} = gen_tcp:recv(S, byte_size(Msg), 10000),
    erlang:monotonic_time(microsecond) - T0.

idle_conn(Port) ->
    {ok, S} = gen_tcp:connect({127,0,0,1}, Port, [binary, {active, false}]),
    ok = gen_tcp:send(S, <<"i">>),
    {ok, <<"i">>} = gen_tcp:recv(S, 1, 10000),
    S.

wait_eof() ->
    case io:get_line("") of
        eof -> eof;
        _ -> wait_eof()
    end.
