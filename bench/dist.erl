%% dist: two Erlang nodes on 127.0.0.1, the twin of dist.lua (same
%% requests, same sizes), for the Erlang-to-Erlang figures; and peer/1,
%% the Erlang node dist.lua measures moonbeam against.
%%
%%   ERL_EPMD_PORT=P erl -noshell -setcookie C -start_epmd false \
%%     -kernel inet_dist_use_interface '{127,0,0,1}' \
%%     -run dist main [R] [N] [G] -s init stop
%%
%% main starts epmd on the test port P (127.0.0.1 only), makes this node
%% distributed, starts a peer node (erl -run dist peer NAME) and measures
%% round_trip and throughput as dist.lua does; the peer and epmd run under
%% timeout(1) (BENCH_TIMEOUT seconds, default 300) and are stopped by
%% their pid at the end.
%%
%% The peer (peer/1) answers, as bench_peer: {hello, From, Node} (it
%% watches Node and halts when Node goes down), {echo, From},
%% {sink, From, N}, {source, From, N} and stop; see dist_peer.lua.
%%
%% Then the same over TLS distribution (inet_tls_dist, both sides
%% verifying the other's certificate), as round_trip_tls and
%% throughput_tls: main makes the certificates with dist_certs.sh (in
%% BENCH_DIR, the directory of the benchmarks) and runs tls_main in a node
%% started with -proto_dist inet_tls, whose peer runs it too.
-module(dist).
-export([main/0, main/1, tls_main/1, peer/1]).

-define(PG_MEMBERS, 100).
-define(PG_READS, 10000).
-define(PG_JOINS, 5000).

main() -> main([]).

main(Args) ->
    Rounds = bench:int_arg(Args, 1, 20000),
    Count = bench:int_arg(Args, 2, 200000),
    Global = bench:int_arg(Args, 3, 500),
    Port = case os:getenv("ERL_EPMD_PORT") of
               false -> error("set ERL_EPMD_PORT to a test port");
               P -> P
           end,
    Tmp = string:trim(os:cmd("mktemp -d")),
    Tag = tag(),
    Epmd = start_os("epmd -port " ++ Port ++ " -address 127.0.0.1",
                    Tmp ++ "/epmd.log"),
    try
        wait_epmd(100),
        {ok, _} = net_kernel:start([list_to_atom("beamdist_" ++ Tag ++ "@127.0.0.1"),
                                    longnames]),
        {ok, _} = pg:start(pg),
        Peer = start_peer(Tag, Tmp, ""),
        try
            measure(list_to_atom("beampeer_" ++ Tag ++ "@127.0.0.1"), Rounds, Count, ""),
            bench:report("global", global_round(Global), "us", "lower"),
            pg_members(connect(list_to_atom("beampeer_" ++ Tag ++ "@127.0.0.1"), 300),
                       ?PG_MEMBERS),
            bench:report("pg_get_members", pg_get_members(?PG_READS), "ns", "lower"),
            bench:report("pg_join_leave", pg_join_leave(?PG_JOINS), "ns", "lower"),
            bench:note("~b round trips, ~b messages one way, ~b global rounds, over 127.0.0.1",
                       [Rounds, Count, Global]),
            bench:note("pg: ~b members of the peer in the group read ~b times; ~b joins "
                       "and leaves of another group, with the peer's scope in sync",
                       [?PG_MEMBERS, ?PG_READS, ?PG_JOINS])
        catch C:E:S ->
            show_logs(Tmp),
            erlang:raise(C, E, S)
        after
            stop_os(Peer)
        end,
        tls_run(Tmp, Rounds, Count)
    after
        net_kernel:stop(),
        stop_os(Epmd),
        os:cmd("rm -rf '" ++ Tmp ++ "'")
    end.

measure(Peer, Rounds, Count, Suffix) ->
    Ctl = connect(Peer, 300),
    bench:report("round_trip" ++ Suffix, round_trip(Ctl, Rounds), "ns", "lower"),
    sink(Ctl, Count div 10),
    bench:report("throughput" ++ Suffix, sink(Ctl, Count), "msg/s", "higher").

%% TLS distribution's flags, with the ssl_dist_optfile in Dir.
tls_flags(Dir) ->
    " -proto_dist inet_tls -ssl_dist_optfile '" ++ Dir ++ "/ssl_dist.conf'".

%% The TLS figures: certificates, then a node of TLS distribution that
%% measures (a node's protocol is set when it starts); its figures go on.
tls_run(Tmp, Rounds, Count) ->
    Dir = Tmp ++ "/tls",
    Certs = filename:join(os:getenv("BENCH_DIR", "."), "dist_certs.sh"),
    ok = file:make_dir(Dir),
    "" = os:cmd("sh '" ++ Certs ++ "' '" ++ Dir ++ "' 2>&1"),
    Ebin = filename:dirname(code:which(?MODULE)),
    Log = Tmp ++ "/tls_main.log",
    Main = start_os("erl -noshell -noinput -setcookie " ++
                    atom_to_list(erlang:get_cookie()) ++
                    " -start_epmd false" ++ tls_flags(Dir) ++
                    " -kernel inet_dist_use_interface '{127,0,0,1}'"
                    " +S " ++ integer_to_list(erlang:system_info(schedulers)) ++
                    " -pa '" ++ Ebin ++ "' -run dist tls_main " ++
                    integer_to_list(Rounds) ++ " " ++ integer_to_list(Count) ++
                    " " ++ Dir ++ " -s init stop", Log),
    wait_gone(Main, 10 * list_to_integer(os:getenv("BENCH_TIMEOUT", "300"))),
    stop_os(Main),
    {ok, Out} = file:read_file(Log),
    Lines = [L || L <- string:split(binary_to_list(Out), "\n", all),
                  lists:prefix("RESULT ", L) orelse lists:prefix("# ", L)],
    [io:format("~s~n", [L]) || L <- Lines],
    case [L || L <- Lines, lists:prefix("RESULT ", L)] of
        [] -> io:format(standard_error, "the TLS run gave no figures:~n~s", [Out]),
              error(no_tls_figures);
        _ -> ok
    end.

%% In a node started with -proto_dist inet_tls: as main, over TLS.
tls_main([R, N, Dir]) ->
    Tmp = string:trim(os:cmd("mktemp -d")),
    Tag = tag(),
    try
        {ok, _} = net_kernel:start([list_to_atom("beamtls_" ++ Tag ++ "@127.0.0.1"),
                                    longnames]),
        Peer = start_peer(Tag, Tmp, tls_flags(Dir)),
        try
            measure(list_to_atom("beampeer_" ++ Tag ++ "@127.0.0.1"),
                    list_to_integer(R), list_to_integer(N), "_tls")
        catch C:E:S ->
            show_logs(Tmp),
            erlang:raise(C, E, S)
        after
            stop_os(Peer)
        end
    after
        os:cmd("rm -rf '" ++ Tmp ++ "'")
    end.

%% The peer's default pg scope gets N members in the group <<"bench">>;
%% wait until this node's scope has them.
pg_members(Ctl, N) ->
    Ctl ! {pg_members, self(), N, <<"bench">>},
    receive {ready, N} -> ok after 30000 -> error(no_pg_members) end,
    {Ref, Now} = pg:monitor(<<"bench">>),
    pg_wait(Ref, length(Now), N),
    pg:demonitor(Ref).

pg_wait(_, N, N) -> ok;
pg_wait(Ref, _, N) ->
    receive {Ref, join, _, _} -> pg_wait(Ref, length(pg:get_members(<<"bench">>)), N)
    after 30000 -> error(no_pg_sync)
    end.

%% ns per pg:get_members of the group the peer filled.
pg_get_members(N) ->
    T0 = bench:now(),
    pg_read(N),
    (bench:now() - T0) / N * 1.0e9.

pg_read(0) -> ok;
pg_read(K) -> _ = pg:get_members(<<"bench">>), pg_read(K - 1).

%% ns per pg:join + pg:leave of this process, announced to the peer.
pg_join_leave(N) ->
    T0 = bench:now(),
    pg_cycle(N),
    (bench:now() - T0) / N * 1.0e9.

pg_cycle(0) -> ok;
pg_cycle(K) ->
    ok = pg:join(<<"local">>, self()),
    ok = pg:leave(<<"local">>, self()),
    pg_cycle(K - 1).

%% G rounds of global register_name, whereis_name and unregister_name
%% with the peer in the cluster (after G/10 not timed): microseconds each.
global_round(G) ->
    ok = global:sync(),
    global_rounds(1, G div 10),
    T0 = bench:now(),
    global_rounds(G, G),
    (bench:now() - T0) / G * 1.0e6.

global_rounds(From, N) ->
    Me = self(),
    lists:foreach(fun(I) ->
                          yes = global:register_name({bench, I}, Me),
                          Me = global:whereis_name({bench, I}),
                          _ = global:unregister_name({bench, I})
                  end, lists:seq(From, From + N - 1)).

%% Wait until the peer answers, and have it watch this node.
connect(Peer, 0) ->
    error({peer_not_up, Peer});
connect(Peer, Tries) ->
    case net_adm:ping(Peer) of
        pong ->
            {bench_peer, Peer} ! {hello, self(), node()},
            receive {hello, Ctl} -> Ctl after 30000 -> error(no_hello) end;
        pang ->
            timer:sleep(100),
            connect(Peer, Tries - 1)
    end.

round_trip(Ctl, Rounds) ->
    Ctl ! {echo, self()},
    Echo = receive {ready, E} -> E after 30000 -> error(no_echo) end,
    ping(Echo, 1, Rounds div 10),
    T0 = bench:now(),
    ping(Echo, 1, Rounds),
    (bench:now() - T0) / Rounds * 1.0e9.

ping(_, I, N) when I > N -> ok;
ping(Echo, I, N) ->
    Echo ! I,
    receive I -> ping(Echo, I + 1, N) end.

%% This node sends N integers, the peer receives them.
sink(Ctl, N) ->
    Ctl ! {sink, self(), N},
    To = receive {ready, S} -> S after 30000 -> error(no_sink) end,
    T0 = bench:now(),
    send_all(To, 1, N),
    receive {done, N} -> ok after 30000 -> error(no_done) end,
    N / (bench:now() - T0).

send_all(_, I, N) when I > N -> ok;
send_all(To, I, N) -> To ! I, send_all(To, I + 1, N).

%% ---------------------------------------------------------------------
%% The peer

%% erl -setcookie C ... -run dist peer NAME@127.0.0.1: the name first,
%% then distribution, so that bench_peer is there once the node answers a
%% ping.
peer([Name]) ->
    {ok, _} = pg:start(pg),
    register(bench_peer, spawn(fun peer_loop/0)),
    {ok, _} = net_kernel:start([list_to_atom(Name), longnames]),
    ok.

peer_loop() ->
    receive
        {hello, From, Node} ->
            monitor_node(Node, true),
            From ! {hello, self()};
        {echo, From} ->
            From ! {ready, spawn(fun() -> echo(From) end)};
        {sink, From, N} ->
            From ! {ready, spawn(fun() -> take(From, N, N) end)};
        {source, From, N} ->
            send_all(From, 1, N);
        {pg_members, From, N, Group} ->
            Pids = [spawn(fun() -> receive stop -> ok end end) || _ <- lists:seq(1, N)],
            ok = pg:join(Group, Pids),
            From ! {ready, N};
        {nodedown, _} ->
            halt(0);
        stop ->
            halt(0);
        _ ->
            ok
    end,
    peer_loop().

echo(From) ->
    receive M -> From ! M end,
    echo(From).

take(From, 0, N) -> From ! {done, N};
take(From, K, N) -> receive _ -> take(From, K - 1, N) end.

%% ---------------------------------------------------------------------
%% OS processes: in the background under timeout(1), stopped by their pid.

start_peer(Tag, Tmp, Flags) ->
    Ebin = filename:dirname(code:which(?MODULE)),
    S = integer_to_list(erlang:system_info(schedulers)),
    start_os("erl -noshell -noinput"
             " -setcookie " ++ atom_to_list(erlang:get_cookie()) ++
             " -start_epmd false -kernel inet_dist_use_interface '{127,0,0,1}'" ++
             Flags ++ " +S " ++ S ++ ":" ++ S ++ " -pa '" ++ Ebin ++ "'"
             " -run dist peer beampeer_" ++ Tag ++ "@127.0.0.1",
             Tmp ++ "/beampeer.log").

start_os(Cmd, Log) ->
    Limit = case os:getenv("BENCH_TIMEOUT") of false -> "300"; L -> L end,
    Pid = string:trim(os:cmd("exec timeout -k 5 " ++ Limit ++ " " ++ Cmd ++
                             " >'" ++ Log ++ "' 2>&1 & echo $!")),
    case proc_stat(Pid) of
        {_, Since} -> {Pid, Since};
        none -> {Pid, gone}
    end.

%% SIGTERM, which timeout passes on (and follows with SIGKILL 5 s later if
%% need be); SIGKILL if still there after 10 s.
stop_os(P) ->
    stop_os(P, ["TERM", "KILL"]).

stop_os(_, []) ->
    ok;
stop_os({Pid, _} = P, [Sig | Sigs]) ->
    case running(P) of
        true ->
            os:cmd("kill -" ++ Sig ++ " " ++ Pid ++ " 2>/dev/null"),
            case wait_gone(P, 100) of
                true -> ok;
                false -> stop_os(P, Sigs)
            end;
        false ->
            ok
    end.

wait_gone(_, 0) ->
    false;
wait_gone(P, Tries) ->
    case running(P) of
        true -> timer:sleep(100), wait_gone(P, Tries - 1);
        false -> true
    end.

%% Whether P is still the process started, and running (a zombie is not,
%% and a pid used again by another process is not ours).
running({Pid, Since}) ->
    case proc_stat(Pid) of
        {State, Since} -> State =/= "Z";
        _ -> false
    end.

%% The state and start time of a process (fields 3 and 22 of
%% /proc/PID/stat), or none.
proc_stat(Pid) ->
    case file:read_file("/proc/" ++ Pid ++ "/stat") of
        {ok, Stat} ->
            [_, After] = string:split(binary_to_list(Stat), ") ", trailing),
            Fields = string:lexemes(After, " \n"),
            {lists:nth(1, Fields), lists:nth(20, Fields)};
        {error, _} ->
            none
    end.

%% Until epmd answers on ERL_EPMD_PORT.
wait_epmd(0) ->
    error(no_epmd);
wait_epmd(Tries) ->
    case erl_epmd:names({127, 0, 0, 1}) of
        {ok, _} -> ok;
        {error, _} -> timer:sleep(50), wait_epmd(Tries - 1)
    end.

show_logs(Tmp) ->
    [io:format(standard_error, "--- ~s~n~s", [F, element(2, file:read_file(F))])
     || F <- filelib:wildcard(Tmp ++ "/*.log")].

tag() ->
    [$a + rand:uniform(26) - 1 || _ <- lists:seq(1, 6)].
