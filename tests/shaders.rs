//! Every kernel family parses and validates with naga (the WGSL front end wgpu itself uses),
//! so a shader error fails here with a line number instead of at pipeline creation.

use moegraft::gpu::shaders::Shader;

#[test]
fn every_shader_validates_with_naga() {
    for shader in Shader::ALL {
        let source = shader.source();
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{}: {}", shader.file_name(), e.emit_to_string(&source)));
        let mut validator = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            // unpack2x16float is core WGSL; naga gates it only for GL backends.
            naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32,
        );
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
    for shader in Shader::ALL {
        let source = shader.source();
        assert!(!source.contains("enable f16"), "{}", shader.file_name());
        assert!(
            !source.contains("enable subgroups"),
            "{}",
            shader.file_name()
        );
    }
}
