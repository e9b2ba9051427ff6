//! Admission of custom resources against a CRD version's `openAPIV3Schema`, the way the
//! Kubernetes API server does it for CRDs: prune unknown fields, apply defaults, validate.
//!
//! Kubernetes sources ported or mirrored:
//! - pruning: `k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning/algorithm.go`
//! - null pruning: `.../apiserver/schema/defaulting/prunenulls.go`
//! - defaulting: `.../apiserver/schema/defaulting/algorithm.go`
//! - validation: `.../apiserver/validation/validation.go` (OpenAPI v3 → JSON Schema
//!   Draft 4 conversion), checked here by the `jsonschema` crate.
//!
//! ```
//! use promised::schema::CrdSchema;
//! use serde_json::json;
//!
//! let schema = CrdSchema::new(&json!({
//!     "type": "object",
//!     "properties": {"spec": {"type": "object", "properties": {
//!         "size": {"type": "string", "default": "small", "pattern": "^(small|large)$"}
//!     }}}
//! }))
//! .expect("valid schema");
//! let mut obj = json!({"kind": "Redis", "metadata": {"name": "r"}, "spec": {"x": 1}});
//! assert!(schema.admit(&mut obj).is_empty());
//! assert_eq!(obj["spec"], json!({"size": "small"}));
//! ```

mod defaults;
mod kubernetes;
mod prune;
mod structural;
mod validate;

#[cfg(test)]
mod tests;

use serde_json::Value;

use structural::Structural;

/// A compiled CRD version schema: the structural tree used for pruning and defaulting,
/// and a Draft 4 `jsonschema` validator used for validation.
///
/// Built once per CRD version with [`CrdSchema::new`]; cheap to share (`&self` methods,
/// `Send + Sync`).
#[derive(Debug, Clone)]
pub struct CrdSchema {
    structural: Structural,
    validator: jsonschema::Validator,
}

/// Why a CRD's `openAPIV3Schema` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The schema, or one of its sub-schemas, is malformed: not a JSON object where a
    /// schema is expected, or rejected by the JSON Schema compiler (e.g. a `pattern`
    /// that is not a valid regular expression).
    ///
    /// `path` is a dotted location inside the `openAPIV3Schema`, e.g.
    /// `properties.spec.properties.size.pattern` (empty for the root).
    #[error("invalid openAPIV3Schema at {}: {message}", if path.is_empty() { "<root>" } else { path.as_str() })]
    InvalidSchema {
        /// Dotted location inside the `openAPIV3Schema`; empty for the root.
        path: String,
        /// What is wrong there.
        message: String,
    },
}

/// One validation failure of a resource, pointing at the offending field.
///
/// `path` is a dotted field path from the resource root: `spec.size`,
/// `spec.containers[0].image`, `spec.labels["a.b/c"]` (array indexes as `[n]`; a key is
/// written `["key"]` when it contains `.`, `[`, `]` or `"`, or is empty). It is empty for
/// an error about the whole resource. For a missing required field it names the missing
/// field itself (`spec.image`).
///
/// `message` says what was found and what was expected, e.g.
/// `"medium" does not match ^(small|large)$`,
/// `"prodd" is not one of: prod, dev, staging, testing`,
/// `required field is missing`, `expected string, found integer 3`.
///
/// Ordering is by `path`, then `message`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct FieldError {
    /// Dotted field path from the resource root (see the type docs).
    pub path: String,
    /// Human-readable description of what was found and what was expected.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl CrdSchema {
    /// Compiles a CRD version's `openAPIV3Schema` (the JSON object found at
    /// `spec.versions[].schema.openAPIV3Schema` of a CRD).
    ///
    /// The validator also enforces that `metadata.name`, when present, is a string of 1
    /// to 63 characters (Kratix adds `maxLength: 63` to every Promise CRD; Kubernetes
    /// requires names to be non-empty).
    ///
    /// # Errors
    /// [`SchemaError::InvalidSchema`] when the schema is not an object, a sub-schema
    /// under `properties`, `items`, `additionalProperties`, `allOf`/`anyOf`/`oneOf`/`not`
    /// is not an object, or the converted Draft 4 schema does not compile.
    pub fn new(open_api_v3_schema: &Value) -> Result<Self, SchemaError> {
        let structural = Structural::parse(open_api_v3_schema, "")?;
        let draft4 = validate::to_draft4(open_api_v3_schema, "")?;
        let validator = validate::compile(draft4)?;
        Ok(CrdSchema {
            structural,
            validator,
        })
    }

    /// Removes, in place, the fields of `obj` the schema does not know, and object
    /// fields whose value is `null` while their schema is neither `nullable` nor has a
    /// `default`.
    ///
    /// Unknown fields are kept under `x-kubernetes-preserve-unknown-fields: true` (known
    /// properties below it are still pruned), under `additionalProperties: true`, and for
    /// `apiVersion`/`kind`/`metadata` of an `x-kubernetes-embedded-resource`. At the
    /// resource root, `apiVersion`, `kind` and `metadata` are never touched.
    ///
    /// Kubernetes: apiextensions-apiserver `pruning/algorithm.go` (`Prune` with
    /// `isResourceRoot = true`) and `defaulting/prunenulls.go`.
    pub fn prune(&self, obj: &mut Value) {
        prune::prune_root(obj, &self.structural);
        prune::prune_nulls_root(obj, &self.structural);
    }

    /// Applies schema `default`s to `obj`, in place.
    ///
    /// A property with a `default` that is missing, or `null` while not `nullable`, gets
    /// the default; defaulting then recurses into every value (freshly defaulted ones
    /// included), array items (a non-nullable `null` item takes the items default) and
    /// `additionalProperties` values.
    ///
    /// Kubernetes: apiextensions-apiserver `defaulting/algorithm.go` (`Default`).
    pub fn apply_defaults(&self, obj: &mut Value) {
        defaults::default(obj, &self.structural);
    }

    /// Validates `obj` against the schema without changing it.
    ///
    /// Returns every violation, sorted by path then message and deduplicated; empty
    /// means valid. Besides the schema's value validations this checks
    /// `x-kubernetes-list-type: set|map` uniqueness and, for
    /// `x-kubernetes-embedded-resource` objects below the root, non-empty `apiVersion` and
    /// `kind`. Formats (`format: date-time`, ...) and `x-kubernetes-validations` (CEL
    /// rules) are not checked.
    ///
    /// Kubernetes: apiextensions-apiserver `validation/validation.go`, kube-openapi's
    /// Draft 4 validator, `schema/listtype/validation.go` and
    /// `schema/objectmeta/validation.go`; messages are this crate's own.
    pub fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errors = validate::validate(&self.validator, obj);
        kubernetes::check_root(obj, &self.structural, &mut errors);
        errors.sort();
        errors.dedup();
        errors
    }

    /// Prunes, defaults, prunes the defaulted result again (the apiserver requires
    /// defaults to be pruned already) and validates `obj`, in apiserver order.
    ///
    /// `obj` is left pruned and defaulted even when errors are returned. Running `admit`
    /// on its own output changes nothing.
    pub fn admit(&self, obj: &mut Value) -> Vec<FieldError> {
        self.prune(obj);
        self.apply_defaults(obj);
        self.prune(obj);
        self.validate(obj)
    }
}
