"""Names, indexers, JSON values, recursion, cycles, loops and scopes."""

from __future__ import annotations

from cuttle.protocol.variables import evaluate


def test_case_insensitive_names_and_indexes() -> None:
    v = {"Octopus.Action[Deploy Web].Output[WEB-01].Healthy": "yes"}
    assert evaluate("#{octopus.action[deploy web].output[web-01].healthy}", v) == "yes"


def test_index_node_defaults_to_its_key() -> None:
    assert evaluate("#{Coll[key]}", {"Coll[key].X": "1"}) == "key"
    assert evaluate("#{Coll[key]}", {"Coll[key].X": "1", "Coll[key]": "own"}) == "own"


def test_parent_only_node_is_missing() -> None:
    assert evaluate("#{A}", {"A.B": "1"}) == "#{A}"


def test_nested_variable_indexes() -> None:
    v = {"Conn[eu]": "c-eu", "Env[t1]": "eu", "Tenant": "t1"}
    assert evaluate("#{Conn[#{Env[#{Tenant}]}]}", v) == "c-eu"
    assert evaluate("#{Conn[#{Nobody}]}", v) == "#{Conn[#{Nobody}]}"


def test_index_text_keeps_nested_brackets_and_trailing_space() -> None:
    v = {"Package[containers[0].container].Registry": "r", "P[a ]": "t"}
    assert evaluate("#{Package[containers[0].container].Registry}", v) == "r"
    assert evaluate("#{P[ a ]}", v) == "t"


def test_wildcard_index_takes_first() -> None:
    assert evaluate("#{S[*].Port}", {"S[a].Port": "1", "S[b].Port": "2"}) == "1"


def test_recursive_values_and_diamond() -> None:
    v = {"A": "#{B}-#{C}", "B": "#{D}", "C": "#{D}", "D": "d"}
    assert evaluate("#{A}", v) == "d-d"


def test_cycles_leave_the_token() -> None:
    assert evaluate("#{Loop}", {"Loop": "#{Loop}"}) == "#{Loop}"
    assert evaluate("[#{Alpha}]", {"Alpha": "#{Beta}", "Beta": "#{Alpha}"}) == "[#{Alpha}]"
    assert evaluate("#{A}", {"A": "x#{A | ToUpper}"}) == "x#{A | ToUpper}"


def test_malformed_value_is_used_raw() -> None:
    assert evaluate("#{A}", {"A": "a #{B} #{oops", "B": "b"}) == "a #{B} #{oops"


def test_json_properties_elements_and_rendering() -> None:
    v = {
        "Cfg": '{"region":"eu","n":[{"name":"a"},{"name":"b"}],"t":true,"f":1.50,'
        '"z":null,"o":{"k":"é","r":4}}'
    }
    assert evaluate("#{Cfg.region}|#{Cfg[region]}|#{Cfg.n[1].name}|#{Cfg.n.0.name}", v) == (
        "eu|eu|b|a"
    )
    assert evaluate("#{Cfg.t}|#{Cfg.f}|[#{Cfg.z}]|[#{Cfg.missing}]|[#{Cfg.n[9]}]", v) == (
        "True|1.5|[]|[]|[]"
    )
    assert evaluate("#{Cfg.o}", v) == '{"k":"é","r":4}'
    assert evaluate("#{Cfg.Region}", v) == ""  # JSON property names match exactly
    assert evaluate("#{Cfg.n[x]}", v) == "#{Cfg.n[x]}"


def test_json_is_template_evaluated_first_and_explicit_wins() -> None:
    v = {"Svc": '{"host":"#{H}","port":1}', "H": "db", "Svc.port": "99"}
    assert evaluate("#{Svc.host}:#{Svc.port}", v) == "db:99"


def test_json_scalar_has_no_properties() -> None:
    assert evaluate("#{Port.x}", {"Port": "8080"}) == "#{Port.x}"


def test_lenient_json() -> None:
    assert evaluate("#{C.Name}", {"C": "{Name: 'x', /* c */ Other: 2,}"}) == "x"


def test_each_comma_list_keeps_spaces_and_empties() -> None:
    assert evaluate("#{each x in L}[#{x}]#{/each}", {"L": "a, b,,c"}) == "[a][ b][][c]"
    assert evaluate("#{each x in L}[#{x}]#{/each}", {"L": ""}) == "[]"


def test_each_value_is_evaluated() -> None:
    assert evaluate("#{each x in L}#{x};#{/each}", {"L": "#{A},#{B}", "A": "1", "B": "2"}) == "1;2;"


def test_each_indexed_collection_order_and_specials() -> None:
    v = {"S[b].Port": "2", "S[a].Port": "1", "S.Count": "2"}
    t = (
        "#{each s in S}#{Octopus.Template.Each.Index}:#{s}=#{s.Port}"
        "#{if Octopus.Template.Each.Last}.#{/if}#{/each}"
    )
    assert evaluate(t, v) == "0:b=21:a=1."


def test_each_json_array_of_objects_and_object() -> None:
    v = {"A": '[{"n":"x"},{"n":"y"}]', "O": '{"k1":{"v":1},"k2":"s"}'}
    assert evaluate("#{each i in A}#{i.n}#{/each}", v) == "xy"
    assert evaluate("#{each p in O}#{p}=#{p.Value};#{/each}", v) == 'k1={"v":1};k2=s;'


def test_each_missing_and_json_null() -> None:
    assert evaluate("a#{each x in Nope}#{x}#{/each}b", {}) == "ab"
    assert evaluate("a#{each x in C.owner}[#{x}]#{/each}b", {"C": '{"x":1}'}) == "a[]b"


def test_loop_scopes_shadow_and_fall_back() -> None:
    v = {"x": "global", "L": "1,2", "M": "a"}
    assert evaluate("#{each x in L}#{x}#{/each}#{x}", v) == "12global"
    t = (
        "#{each o in L}#{each i in M}#{Octopus.Template.Each.Index}#{/each}"
        "#{Octopus.Template.Each.Index}#{/each}"
    )
    assert evaluate(t, v) == "0001"
    assert evaluate("#{Octopus.Template.Each.Index}", {}) == "#{Octopus.Template.Each.Index}"


def test_global_value_does_not_see_loop_variable() -> None:
    v = {"Banner": "lane=#{lane}", "L": "a"}
    assert evaluate("#{each lane in L}#{Banner}#{/each}", v) == "lane=#{lane}"


def test_value_reached_through_loop_variable_sees_it() -> None:
    v = {"Svc[a].url": "http://#{s}.local"}
    assert evaluate("#{each s in Svc}#{s.url}#{/each}", v) == "http://a.local"


def test_empty_value_is_not_missing() -> None:
    assert evaluate("[#{E}]", {"E": ""}) == "[]"
