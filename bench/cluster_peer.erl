%% The Erlang twin of cluster_peer.lua for bench/cluster.lua's beam/static
%% row: what libcluster's Epmd strategy does, net_kernel:connect_node to
%% each of the other nodes once, in turn.
%%   erl -name cR_I@127.0.0.1 -setcookie C -noshell -run cluster_peer start N I R CTL_PORT
-module(cluster_peer).
-export([start/1]).

start([NS, IS, RS, CS]) ->
    [N, I, R, Ctl] = [list_to_integer(X) || X <- [NS, IS, RS, CS]],
    {ok, S} = gen_udp:open(0, [binary, {ip, {127, 0, 0, 1}}, {active, false}]),
    {ok, Port} = inet:port(S),
    Say = fun(Fmt, Args) -> gen_udp:send(S, {127, 0, 0, 1}, Ctl, io_lib:format(Fmt, Args)) end,
    Say("ready ~b ~b", [I, Port]),
    wait_go(S),
    ok = net_kernel:monitor_nodes(true),
    Others = [list_to_atom(lists:flatten(io_lib:format("c~b_~b@127.0.0.1", [R, K])))
              || K <- lists:seq(1, N), K =/= I],
    [net_kernel:connect_node(O) || O <- Others],
    wait_mesh(N - 1),
    Say("meshed ~b", [I]),
    receive stop -> ok end.

wait_go(S) ->
    case gen_udp:recv(S, 0) of
        {ok, {_, _, <<"go">>}} -> ok;
        _ -> wait_go(S)
    end.

wait_mesh(K) ->
    case length(nodes()) >= K of
        true -> ok;
        false -> receive _ -> wait_mesh(K) after 1000 -> wait_mesh(K) end
    end.
