%% upgrade: the Erlang twin of upgrade.lua.  N idle gen_servers of one
%% module move to a new version the OTP way (a gen_server moves only when
%% sys:change_code asks it): suspend all, load the new version, change_code
%% all, resume all, then one call to each, until all have answered from the
%% new version.  upgrade_all and upgrade_all_sys are the same procedure
%% here; call_p99_* time the calls a client makes in a loop to one more
%% server of the module.
-module(upgrade).
-export([main/1]).

-define(MOD, bench_upgrade_srv).

main(Args) ->
    N = bench:int_arg(Args, 1, 10000),
    load(1),
    Servers = [start() || _ <- lists:seq(1, N)],
    Watched = start(),
    call_all(Servers, 1),
    {Quiet, _} = watching(Watched, fun() -> call_all(Servers, 1) end),
    {During, UpgradeAll} = watching(Watched, fun() -> timed(Servers, 2) end),
    UpgradeSys = timed(Servers, 3),
    [gen_server:stop(S) || S <- [Watched | Servers]],
    bench:note("~p idle servers; the watched server answered ~p calls quietly, ~p during the upgrade",
               [N, length(Quiet), length(During)]),
    bench:report("upgrade_all", UpgradeAll * 1.0e3, "ms", "lower"),
    bench:report("upgrade_all_sys", UpgradeSys * 1.0e3, "ms", "lower"),
    bench:report("call_p99_quiet", bench:percentile(Quiet, 99) * 1.0e6, "us", "lower"),
    bench:report("call_p99_upgrade", bench:percentile(During, 99) * 1.0e6, "us", "lower"),
    bench:report("call_max_upgrade", lists:last(During) * 1.0e6, "us", "lower").

%% Version V of the callback module: vsn answers V; calls are fully
%% qualified through gen_server, so the new code runs after the load.
load(V) ->
    Src = io_lib:format(
            "-module(~s).~n-export([init/1, handle_call/3, handle_cast/2, code_change/3]).~n"
            "init(S) -> {ok, S}.~n"
            "handle_call(vsn, _, S) -> {reply, ~p, S};~n"
            "handle_call(R, _, S) -> {reply, R, S}.~n"
            "handle_cast(_, S) -> {noreply, S}.~n"
            "code_change(_, S, _) -> {ok, S}.~n", [?MOD, V]),
    {ok, Tokens, _} = erl_scan:string(lists:flatten(Src)),
    Forms = split_forms(Tokens, [], []),
    {ok, ?MOD, Bin} = compile:forms(Forms, []),
    code:purge(?MOD),
    {module, ?MOD} = code:load_binary(?MOD, "bench_upgrade_srv.erl", Bin).

split_forms([], [], Acc) -> lists:reverse(Acc);
split_forms([{dot, _} = D | T], Cur, Acc) ->
    {ok, F} = erl_parse:parse_form(lists:reverse([D | Cur])),
    split_forms(T, [], [F | Acc]);
split_forms([Tok | T], Cur, Acc) -> split_forms(T, [Tok | Cur], Acc).

start() ->
    {ok, Pid} = gen_server:start(?MOD, 0, []),
    Pid.

call_all(Servers, Want) ->
    [Want = gen_server:call(S, vsn) || S <- Servers],
    ok.

timed(Servers, V) ->
    T0 = bench:now(),
    [ok = sys:suspend(S) || S <- Servers],
    load(V),
    [ok = sys:change_code(S, ?MOD, V - 1, undefined) || S <- Servers],
    [ok = sys:resume(S) || S <- Servers],
    call_all(Servers, V),
    bench:now() - T0.

watching(Watched, Work) ->
    Parent = self(),
    C = spawn(fun() -> Parent ! calling, client(Watched, 0, []) end),
    receive calling -> ok end,
    R = Work(),
    C ! {stop, Parent},
    receive {lat, Lat} -> {Lat, R} end.

client(Server, I, Acc) ->
    receive
        {stop, Parent} -> Parent ! {lat, lists:sort(Acc)}
    after 0 ->
        T = bench:now(),
        gen_server:call(Server, I),
        client(Server, I + 1, [bench:now() - T | Acc])
    end.
