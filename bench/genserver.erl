%% genserver: what a gen_server costs; the twin of genserver.lua.  Times R
%% gen_server:call round trips to a server that echoes the request, then
%% starts N idle servers and measures their memory: process_info(memory)
%% read inside each server by a call, the growth of the resident set and
%% the growth of erlang:memory(processes), per server.
%%   erl -noshell -run genserver main [R] [N] -s init stop
-module(genserver).
-behaviour(gen_server).
-export([main/0, main/1]).
-export([init/1, handle_call/3, handle_cast/2]).

main() -> main([]).

main(Args) ->
    Rounds = bench:int_arg(Args, 1, 100000),
    N = bench:int_arg(Args, 2, 10000),
    %% Call round trip.
    {ok, Server} = gen_server:start(?MODULE, 0, []),
    calls(Server, 1, 1000), % warm up
    T0 = bench:now(),
    calls(Server, 1, Rounds),
    PerCall = (bench:now() - T0) / Rounds,
    gen_server:stop(Server),
    %% N idle servers.
    erlang:garbage_collect(),
    Rss0 = bench:rss(),
    Procs0 = erlang:memory(processes),
    T1 = bench:now(),
    Servers = [begin {ok, P} = gen_server:start(?MODULE, 0, []), P end
               || _ <- lists:seq(1, N)],
    PerStart = (bench:now() - T1) / N,
    erlang:garbage_collect(),
    Rss1 = bench:rss(),
    Procs1 = erlang:memory(processes),
    Heap = lists:sum([gen_server:call(P, memory) || P <- Servers]),
    bench:note("~b calls; ~b idle servers, ~b processes alive",
               [Rounds, N, erlang:system_info(process_count)]),
    bench:report("call_round_trip", PerCall * 1.0e9, "ns", "lower"),
    bench:report("server_start", PerStart * 1.0e9, "ns/server", "lower"),
    bench:report("idle_server_heap", Heap / N, "B", "lower"),
    bench:report("rss_per_idle_server", (Rss1 - Rss0) / N, "B/server", "lower"),
    bench:report("procs_per_server", (Procs1 - Procs0) / N, "B/server",
                 "lower").

calls(_, I, Rounds) when I > Rounds -> ok;
calls(Server, I, Rounds) ->
    I = gen_server:call(Server, I),
    calls(Server, I + 1, Rounds).

%% gen_server callbacks: an echo, and a request that returns the server's
%% own memory.
init(State) -> {ok, State}.

handle_call(memory, _From, State) ->
    {memory, Bytes} = process_info(self(), memory),
    {reply, Bytes, State};
handle_call(Request, _From, State) ->
    {reply, Request, State}.

handle_cast(_Request, State) -> {noreply, State}.
