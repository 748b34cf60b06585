%% The Erlang servers of the socket benchmarks (bench/sockets), doing what
%% examples/echo and examples/http do: one process per connection.
%%   erl -noshell -pa DIR -run sock_servers main echo
%%   erl -noshell -pa DIR -run sock_servers main http
%% Each prints "listening on 127.0.0.1:PORT" and runs until killed.
-module(sock_servers).
-export([main/1]).

main([Kind]) ->
    Opts = case Kind of
               "echo" -> [binary, {active, false}];
               "http" -> [binary, {packet, http_bin}, {active, false}]
           end,
    {ok, L} = gen_tcp:listen(0, [{ip, {127,0,0,1}}, {backlog, 1024},
                                 {nodelay, true}, {reuseaddr, true} | Opts]),
    {ok, Port} = inet:port(L),
    io:format("listening on 127.0.0.1:~b~n", [Port]),
    accept(L, list_to_atom(Kind)).

accept(L, Kind) ->
    {ok, S} = gen_tcp:accept(L),
    Pid = spawn(fun() -> receive go -> serve(Kind, S) end end),
    ok = gen_tcp:controlling_process(S, Pid),
    Pid ! go,
    accept(L, Kind).

serve(echo, S) ->
    inet:setopts(S, [{active, once}]),
    echo(S);
serve(http, S) ->
    http(S, undefined).

echo(S) ->
    receive
        {tcp, S, Data} ->
            ok = gen_tcp:send(S, Data),
            inet:setopts(S, [{active, once}]),
            echo(S);
        {tcp_closed, S} -> ok;
        {tcp_error, S, _} -> ok
    end.

%% A request line, headers up to http_eoh, then the answer; keep-alive.
http(S, Path) ->
    case gen_tcp:recv(S, 0, 60000) of
        {ok, {http_request, _Method, {abs_path, P}, _Version}} -> http(S, P);
        {ok, {http_header, _, _, _, _}} -> http(S, Path);
        {ok, http_eoh} ->
            Body = case Path of
                       <<"/">> -> <<"Hello from moonbeam!\n">>;
                       _ -> <<"not found\n">>
                   end,
            Code = case Path of <<"/">> -> <<"200 OK">>; _ -> <<"404 Not Found">> end,
            ok = gen_tcp:send(S, [<<"HTTP/1.1 ">>, Code,
                                  <<"\r\ncontent-type: text/plain\r\ncontent-length: ">>,
                                  integer_to_binary(byte_size(Body)), <<"\r\n\r\n">>, Body]),
            http(S, undefined);
        _ -> gen_tcp:close(S)
    end.
