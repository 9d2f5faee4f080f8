// Command webhook-match decides, as kube-apiserver does, whether each webhook of some
// Mutating/ValidatingWebhookConfigurations would be called for each of a stream of
// admission requests.
//
// It runs the API server's own code for every step of that decision, in the API server's
// order (k8s.io/apiserver's generic webhook dispatcher, ShouldCallHook): the
// namespaceSelector and objectSelector matchers, the rules matcher, and the
// matchConditions matcher compiled by the same CEL compiler with the same environment
// (stored expressions, authorizer variables declared). Objects are decoded and
// defaulted with the Kubernetes scheme where their kind is built in, as the API server
// does before calling webhooks; other kinds stay unstructured, like custom resources.
//
// Usage:
//
//	webhook-match [-registrations FILE] [-echo] < requests.jsonl > decisions.jsonl
//	webhook-match -registrations FILE -compile-only
//
// Each input line is a JSON object (with "registrations": FILE it is decided by that file's
// configurations, compiled once per file, instead of -registrations'):
//
//	{"id": "...", "operation": "CREATE", "kind": {"group": "", "version": "v1", "kind": "Pod"},
//	 "resource": {"group": "", "version": "v1", "resource": "pods"}, "subResource": "",
//	 "namespace": "ns", "name": "", "namespaceLabels": {...},
//	 "userInfo": {"username": "...", "groups": [...]}, "object": {...}, "oldObject": {...}}
//
// and each output line says, per webhook name, whether it is called, why not, and any
// error a match condition raised (an error makes the API server apply the failurePolicy;
// with Ignore the webhook is skipped):
//
//	{"id": "...", "webhooks": {"mutate.spotguard.dev": {"call": true}, ...},
//	 "object": {...}, "oldObject": {...}}
//
// With -echo the objects are echoed as decoded and defaulted, so the caller can judge
// exactly what the conditions saw. An object that cannot be decoded (the API server would
// refuse it) gives {"id": ..., "decodeError": "..."}.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/apiserver/pkg/admission"
	plugincel "k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/webhook"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/matchconditions"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/predicates/namespace"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/predicates/object"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/predicates/rules"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/cel/environment"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/kubernetes/pkg/api/legacyscheme"

	// The built-in kinds spotguard reviews, and the webhook configurations themselves,
	// registered with their defaulting functions.
	_ "k8s.io/kubernetes/pkg/apis/admissionregistration/install"
	_ "k8s.io/kubernetes/pkg/apis/apps/install"
	_ "k8s.io/kubernetes/pkg/apis/batch/install"
	_ "k8s.io/kubernetes/pkg/apis/core/install"
)

type request struct {
	ID              string                      `json:"id"`
	Operation       string                      `json:"operation"`
	Kind            metav1.GroupVersionKind     `json:"kind"`
	Resource        metav1.GroupVersionResource `json:"resource"`
	SubResource     string                      `json:"subResource"`
	Namespace       string                      `json:"namespace"`
	Name            string                      `json:"name"`
	NamespaceLabels map[string]string           `json:"namespaceLabels"`
	UserInfo        userInfo                    `json:"userInfo"`
	DryRun          bool                        `json:"dryRun"`
	Object          json.RawMessage             `json:"object"`
	OldObject       json.RawMessage             `json:"oldObject"`
	// Registrations, if set, names the file of webhook configurations to decide with
	// instead of -registrations (each file is read and compiled once).
	Registrations string `json:"registrations"`
}

type userInfo struct {
	Username string              `json:"username"`
	UID      string              `json:"uid"`
	Groups   []string            `json:"groups"`
	Extra    map[string][]string `json:"extra"`
}

type decision struct {
	Call   bool   `json:"call"`
	Reason string `json:"reason,omitempty"`
	Error  string `json:"error,omitempty"`
}

type result struct {
	ID          string              `json:"id"`
	Webhooks    map[string]decision `json:"webhooks,omitempty"`
	DecodeError string              `json:"decodeError,omitempty"`
	Object      any                 `json:"object,omitempty"`
	OldObject   any                 `json:"oldObject,omitempty"`
}

// hook is one webhook with the matchers the API server would build for it: the real
// one (its own failurePolicy) and a strict one (failurePolicy Fail) that reveals errors.
type hook struct {
	accessor webhook.WebhookAccessor
	strict   matchconditions.Matcher
	real     matchconditions.Matcher
}

func main() {
	registrations := flag.String("registrations", "", "YAML or JSON file of webhook configurations")
	echo := flag.Bool("echo", false, "echo the decoded and defaulted objects")
	compileOnly := flag.Bool("compile-only", false, "only compile every match condition and report errors")
	flag.Parse()
	files := &hookFiles{compiled: map[string][]hook{}}
	if *registrations != "" {
		hooks, err := files.get(*registrations)
		if err != nil {
			fail(err)
		}
		if *compileOnly {
			os.Exit(compileAll(hooks))
		}
	} else if *compileOnly {
		fail(errors.New("-compile-only needs -registrations"))
	}
	if err := run(files, *registrations, os.Stdin, os.Stdout, *echo); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "webhook-match:", err)
	os.Exit(2)
}

// loadHooks reads every Mutating/ValidatingWebhookConfiguration in the file, in order.
func loadHooks(path string) ([]hook, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	compiler := plugincel.NewConditionCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var hooks []hook
	for {
		var raw map[string]any
		if err := decoder.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if raw == nil {
			continue
		}
		document, _ := json.Marshal(raw)
		switch raw["kind"] {
		case "MutatingWebhookConfiguration":
			var config admissionregistrationv1.MutatingWebhookConfiguration
			if err := json.Unmarshal(document, &config); err != nil {
				return nil, err
			}
			legacyscheme.Scheme.Default(&config) // as stored: empty selectors match everything
			for i := range config.Webhooks {
				h := &config.Webhooks[i]
				strict := *h
				strict.FailurePolicy = ptr(admissionregistrationv1.Fail)
				hooks = append(hooks, newHook(
					webhook.NewMutatingWebhookAccessor(h.Name, config.Name, h),
					webhook.NewMutatingWebhookAccessor(h.Name, config.Name, &strict),
					compiler,
				))
			}
		case "ValidatingWebhookConfiguration":
			var config admissionregistrationv1.ValidatingWebhookConfiguration
			if err := json.Unmarshal(document, &config); err != nil {
				return nil, err
			}
			legacyscheme.Scheme.Default(&config) // as stored: empty selectors match everything
			for i := range config.Webhooks {
				h := &config.Webhooks[i]
				strict := *h
				strict.FailurePolicy = ptr(admissionregistrationv1.Fail)
				hooks = append(hooks, newHook(
					webhook.NewValidatingWebhookAccessor(h.Name, config.Name, h),
					webhook.NewValidatingWebhookAccessor(h.Name, config.Name, &strict),
					compiler,
				))
			}
		}
	}
	if len(hooks) == 0 {
		return nil, fmt.Errorf("%s: no webhook configurations", path)
	}
	return hooks, nil
}

func ptr[T any](value T) *T { return &value }

func newHook(real, strict webhook.WebhookAccessor, compiler plugincel.ConditionCompiler) hook {
	return hook{accessor: real, real: real.GetCompiledMatcher(compiler), strict: strict.GetCompiledMatcher(compiler)}
}

// compileAll compiles every match condition as the API server validates a new
// configuration (NewExpressions) and as it runs a stored one (StoredExpressions).
func compileAll(hooks []hook) int {
	status := 0
	compiler := plugincel.NewCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
	for _, h := range hooks {
		for _, condition := range h.accessor.GetMatchConditions() {
			for _, mode := range []environment.Type{environment.NewExpressions, environment.StoredExpressions} {
				compiled := compiler.CompileCELExpression(
					&matchconditions.MatchCondition{Name: condition.Name, Expression: condition.Expression},
					plugincel.OptionalVariableDeclarations{HasAuthorizer: true}, mode)
				if compiled.Error != nil {
					fmt.Printf("%s/%s (%s): %v\n", h.accessor.GetName(), condition.Name, mode, compiled.Error)
					status = 1
				}
			}
		}
	}
	return status
}

// hookFiles compiles each registrations file once.
type hookFiles struct {
	compiled map[string][]hook
}

func (f *hookFiles) get(path string) ([]hook, error) {
	if hooks, ok := f.compiled[path]; ok {
		return hooks, nil
	}
	hooks, err := loadHooks(path)
	if err != nil {
		return nil, err
	}
	f.compiled[path] = hooks
	return hooks, nil
}

func run(files *hookFiles, defaultPath string, in io.Reader, out io.Writer, echo bool) error {
	scanner := bufio.NewScanner(in)
	scanner.Buffer(make([]byte, 1<<20), 64<<20)
	writer := bufio.NewWriter(out)
	defer writer.Flush()
	encoder := json.NewEncoder(writer)
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		if line == "" {
			continue
		}
		var req request
		if err := json.Unmarshal([]byte(line), &req); err != nil {
			return fmt.Errorf("bad input line: %w", err)
		}
		path := req.Registrations
		if path == "" {
			path = defaultPath
		}
		if path == "" {
			return fmt.Errorf("request %s: no registrations (-registrations or \"registrations\")", req.ID)
		}
		hooks, err := files.get(path)
		if err != nil {
			return err
		}
		if err := encoder.Encode(decide(hooks, &req, echo)); err != nil {
			return err
		}
		// Answer each request at once: a caller may send the next one only then.
		if err := writer.Flush(); err != nil {
			return err
		}
	}
	return scanner.Err()
}

func decide(hooks []hook, req *request, echo bool) result {
	res := result{ID: req.ID}
	gvk := schema.GroupVersionKind{Group: req.Kind.Group, Version: req.Kind.Version, Kind: req.Kind.Kind}
	obj, err := decodeObject(req.Object, gvk)
	if err != nil {
		res.DecodeError = "object: " + err.Error()
		return res
	}
	old, err := decodeObject(req.OldObject, gvk)
	if err != nil {
		res.DecodeError = "oldObject: " + err.Error()
		return res
	}
	if echo {
		res.Object, res.OldObject = plain(obj), plain(old)
	}
	gvr := schema.GroupVersionResource{Group: req.Resource.Group, Version: req.Resource.Version, Resource: req.Resource.Resource}
	info := &user.DefaultInfo{Name: req.UserInfo.Username, UID: req.UserInfo.UID, Groups: req.UserInfo.Groups, Extra: req.UserInfo.Extra}
	attr := admission.NewAttributesRecord(obj, old, gvk, req.Namespace, req.Name, gvr, req.SubResource,
		admission.Operation(req.Operation), nil, req.DryRun, info)
	versioned := &admission.VersionedAttributes{
		Attributes:         attr,
		VersionedObject:    admission.NewLazyObject(obj),
		VersionedOldObject: admission.NewLazyObject(old),
		VersionedKind:      gvk,
	}
	namespaces := namespace.Matcher{NamespaceLister: namespaceLister(req.Namespace, req.NamespaceLabels)}
	objects := object.Matcher{}
	res.Webhooks = map[string]decision{}
	for _, h := range hooks {
		res.Webhooks[h.accessor.GetName()] = shouldCall(h, attr, versioned, &namespaces, &objects)
	}
	return res
}

// shouldCall follows the generic dispatcher's ShouldCallHook, step by step.
func shouldCall(h hook, attr admission.Attributes, versioned *admission.VersionedAttributes,
	namespaces *namespace.Matcher, objects *object.Matcher) decision {
	if matches, err := namespaces.MatchNamespaceSelector(h.accessor, attr); err != nil {
		return decision{Reason: "namespaceSelector", Error: err.Error()}
	} else if !matches {
		return decision{Reason: "namespaceSelector"}
	}
	if matches, err := objects.MatchObjectSelector(h.accessor, attr); err != nil {
		return decision{Reason: "objectSelector", Error: err.Error()}
	} else if !matches {
		return decision{Reason: "objectSelector"}
	}
	ruled := false
	for _, rule := range h.accessor.GetRules() {
		if (&rules.Matcher{Rule: rule, Attr: attr}).Matches() {
			ruled = true
			break
		}
	}
	if !ruled {
		return decision{Reason: "rules"}
	}
	if len(h.accessor.GetMatchConditions()) == 0 {
		return decision{Call: true}
	}
	ctx := context.Background()
	strict := h.strict.Match(ctx, versioned, nil, nil)
	real := h.real.Match(ctx, versioned, nil, nil)
	d := decision{Call: real.Matches}
	if strict.Error != nil {
		d.Error = strict.Error.Error()
	}
	if !real.Matches {
		d.Reason = "matchConditions"
		if real.FailedConditionName != "" {
			d.Reason += ":" + real.FailedConditionName
		}
	}
	return d
}

// decodeObject turns JSON into what the API server hands to admission: a typed,
// defaulted object for built-in kinds, an unstructured one for the rest.
func decodeObject(data json.RawMessage, gvk schema.GroupVersionKind) (runtime.Object, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return nil, nil
	}
	if legacyscheme.Scheme.Recognizes(gvk) && gvk.Kind != "" {
		typed, err := legacyscheme.Scheme.New(gvk)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(trimmed, typed); err != nil {
			return nil, err
		}
		legacyscheme.Scheme.Default(typed)
		typed.GetObjectKind().SetGroupVersionKind(gvk)
		return typed, nil
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(trimmed); err != nil {
		// Unstructured insists on apiVersion and kind; a custom resource's body may not
		// repeat them in a test request, so fall back to the generic JSON decoder.
		var content map[string]any
		if err := json.Unmarshal(trimmed, &content); err != nil {
			return nil, err
		}
		u.Object = normalizeNumbers(content).(map[string]any)
	}
	return u, nil
}

// normalizeNumbers turns float64s that hold integers into int64s, as the API server's
// unstructured JSON decoding does.
func normalizeNumbers(value any) any {
	switch v := value.(type) {
	case map[string]any:
		for key, item := range v {
			v[key] = normalizeNumbers(item)
		}
		return v
	case []any:
		for i, item := range v {
			v[i] = normalizeNumbers(item)
		}
		return v
	case float64:
		if v == float64(int64(v)) {
			return int64(v)
		}
		return v
	default:
		return v
	}
}

func plain(obj runtime.Object) any {
	if obj == nil {
		return nil
	}
	if u, ok := obj.(*unstructured.Unstructured); ok {
		return u.Object
	}
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil
	}
	return content
}

func namespaceLister(name string, labels map[string]string) corelisters.NamespaceLister {
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	if name != "" {
		// The API server labels every namespace with its own name.
		all := map[string]string{"kubernetes.io/metadata.name": name}
		for key, value := range labels {
			all[key] = value
		}
		_ = indexer.Add(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: all}})
	}
	return corelisters.NewNamespaceLister(indexer)
}
