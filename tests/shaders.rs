//! Every kernel family parses and validates with naga (the WGSL front end wgpu itself uses),
//! so a shader error fails here with a line number instead of at pipeline creation.

use moegraft::gpu::shaders::Shader;

#[test]
fn every_shader_validates_with_naga() {
    for shader in Shader::ALL {
        let source = shader.source();
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{}: {}", shader.file_name(), e.emit_to_string(&source)));
        // unpack2x16float is core WGSL; naga gates it only for GL backends.
        let mut capabilities = naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
        if shader.needs_subgroups() {
            capabilities |= naga::valid::Capabilities::SUBGROUP;
        }
        let mut validator =
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), capabilities);
        if shader.needs_subgroups() {
            validator.subgroup_stages(naga::valid::ShaderStages::COMPUTE);
            validator.subgroup_operations(naga::valid::SubgroupOperationSet::all());
        }
        validator
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}: {}", shader.file_name(), e.emit_to_string(&source)));
        assert!(
            !module.entry_points.is_empty(),
            "{} has no entry point",
            shader.file_name()
        );
    }
}

#[test]
fn baseline_shaders_need_no_f16_or_subgroups() {
    for shader in Shader::ALL.into_iter().filter(|s| !s.needs_subgroups()) {
        let source = shader.source();
        assert!(!source.contains("enable f16"), "{}", shader.file_name());
        // No subgroup builtin values and no subgroup functions (subgroupAdd, ...).
        let uses_subgroups = source.contains("@builtin(subgroup")
            || source
                .match_indices("subgroup")
                .any(|(at, _)| source[at + 8..].starts_with(|c: char| c.is_ascii_uppercase()));
        assert!(!uses_subgroups, "{}", shader.file_name());
    }
}
